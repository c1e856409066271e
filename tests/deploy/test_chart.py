"""The Helm chart: lint, render every ci scenario, validate against the
Kubernetes schemas offline, and check what operators rely on in the objects.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import CHART, HELM, REPO, require_tool, run_tool

SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
#: Oldest and newest Kubernetes minor versions the chart supports (and
#: kubernetes-validate ships schemas for); Chart.yaml's kubeVersion agrees.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
#: prometheus-operator CRDs: no schema in kubernetes-validate, checked by shape below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
RELEASE = "pb"
NAMESPACE = "contact-centre"
SELECTOR = {"app.kubernetes.io/name": "presence-bridge", "app.kubernetes.io/instance": RELEASE}


def helm_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    require_tool(HELM, "it builds helm v3.22.0 into .cache/bin with `go install`")
    return subprocess.run(
        [str(HELM), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


@functools.cache
def render(
    scenario: str = "default-values.yaml", kube: str = KUBE_VERSIONS[-1], sets: tuple[str, ...] = ()
) -> tuple[dict[str, Any], ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube]
    args += ["-f", str(CHART / "ci" / scenario)]
    for s in sets:
        args += ["--set", s]
    proc = helm_cmd(*args)
    if proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}", pytrace=False)
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def find(docs: tuple[dict[str, Any], ...], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"{len(matches)} {kind} objects ending in {name_suffix!r}"
    return matches[0]


def kinds(docs: tuple[dict[str, Any], ...]) -> set[str]:
    return {d["kind"] for d in docs}


def worker(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env_of(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in worker(docs)["env"]}


def configmap(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return find(docs, "ConfigMap", "presence-bridge")["data"]


# --- lint, render, validate -------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(helm: Path, scenario: str) -> None:
    """`helm lint --strict` passes for every ci scenario."""
    for kube in KUBE_VERSIONS:
        run_tool(helm, "lint", "--strict", CHART, "-f", CHART / "ci" / scenario, "--kube-version", kube)


def test_the_ci_scenarios_exist() -> None:
    """Defaults, external Kafka with SASL_SSL, mTLS, several OAuth clients, everything enabled."""
    assert SCENARIOS == [
        "default-values.yaml",
        "everything-enabled-values.yaml",
        "external-kafka-sasl-ssl-values.yaml",
        "mtls-values.yaml",
        "multiple-oauth-clients-values.yaml",
    ]


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_match_the_kubernetes_schema(scenario: str, kube: str) -> None:
    """Every rendered object validates in strict mode (no unknown fields) for the supported versions."""
    docs = render(scenario, kube)
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        try:
            validated = kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{scenario} {doc['kind']}/{doc['metadata']['name']} on {kube}: {path}: {exc.message}"
            )
        assert validated == kube.rsplit(".", 1)[0]


def test_chart_kube_version_matches_the_oldest_validated() -> None:
    """Chart.yaml's kubeVersion floor is the oldest version the tests validate."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.29.0-0"
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == "0.1.0"
    proc = helm_cmd("template", RELEASE, str(CHART), "--kube-version", "1.28.0")
    assert proc.returncode != 0 and "kubeVersion" in proc.stderr


def test_default_objects() -> None:
    """Defaults: workload, config, metrics Service, ServiceAccount, PDB, test pod; no monitoring CRDs."""
    docs = render()
    assert kinds(docs) == {
        "Deployment",
        "ConfigMap",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "Pod",
    }


def test_everything_enabled_objects() -> None:
    """Each `enabled` flag adds its object."""
    docs = render("everything-enabled-values.yaml")
    assert {"ServiceMonitor", "PrometheusRule", "NetworkPolicy"} <= kinds(docs)
    assert find(docs, "ConfigMap", "-dashboard")


@pytest.mark.parametrize(
    ("flag", "kind"),
    [
        ("podDisruptionBudget.enabled=false", "PodDisruptionBudget"),
        ("serviceAccount.create=false", "ServiceAccount"),
    ],
)
def test_disabling_removes_the_object(flag: str, kind: str) -> None:
    """Flags on by default can be turned off."""
    assert kind in kinds(render())
    assert kind not in kinds(render(sets=(flag,)))


# --- the workload -----------------------------------------------------------------------


def test_replicas_labels_and_selectors() -> None:
    """3 replicas by default; selectors stable; recommended labels everywhere."""
    docs = render()
    deploy = find(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["selector"]["matchLabels"] == SELECTOR
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert SELECTOR.items() <= pod_labels.items()
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "presence-bridge-0.1.0"
    assert find(docs, "Service")["spec"]["selector"] == SELECTOR
    assert find(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == SELECTOR
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    # The helm test pod is not a worker: neither the Service nor the PDB may select it.
    test_pod = find(docs, "Pod")
    assert not SELECTOR.items() <= test_pod["metadata"]["labels"].items()


def test_security_context_is_locked_down() -> None:
    """Non-root, read-only root, no escalation, no capabilities, RuntimeDefault seccomp."""
    for scenario in SCENARIOS:
        docs = render(scenario)
        pod = find(docs, "Deployment")["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["runAsUser"] == 10001 and psc["runAsGroup"] == 10001
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in [*pod["containers"], *find(docs, "Pod")["spec"]["containers"]]:
            csc = container["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True
            assert csc["allowPrivilegeEscalation"] is False
            assert csc["capabilities"] == {"drop": ["ALL"]}
        assert find(docs, "Pod")["spec"]["securityContext"]["runAsNonRoot"] is True
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "read-only root needs a writable /tmp"


def test_probes_resources_and_termination() -> None:
    """Liveness /healthz and readiness /readyz on the metrics port; resources; grace > drain."""
    docs = render()
    container = worker(docs)
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    assert container["args"] == ["run"]
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 10
    spread = pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"] == SELECTOR for c in spread)


def test_service_exposes_the_metrics_port() -> None:
    """The metrics Service targets the named port."""
    svc = find(render(), "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_checksum_annotation_follows_the_config() -> None:
    """A configuration change changes the pod template; an unrelated change does not."""

    def checksum(*sets: str) -> str:
        docs = render(sets=sets)
        return find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum()
    assert len(base) == 64
    assert checksum("logLevel=DEBUG") != base
    assert checksum("kafka.bootstrapServers=other:9092") != base
    assert checksum("replicaCount=5") == base


def test_image_tag_defaults_to_app_version_and_digest_pins() -> None:
    """The image is repository:appVersion unless a digest pins it."""
    assert worker(render())["image"] == "ghcr.io/presence-bridge/presence-bridge:0.1.0"
    pinned = worker(render("everything-enabled-values.yaml"))["image"]
    assert pinned.startswith("registry.example.net/platform/presence-bridge@sha256:")


def _egress_ports(rule: dict[str, Any]) -> set[tuple[int, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def test_network_policy_defaults() -> None:
    """Off by default; on, it admits only the metrics port and lets out DNS, Kafka's and Genesys's ports."""
    assert "NetworkPolicy" not in kinds(render())
    policy = find(render(sets=("networkPolicy.enabled=true",)), "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {"matchLabels": SELECTOR}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    dns, kafka, genesys = policy["egress"]
    assert _egress_ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert _egress_ports(kafka) == {(9092, "TCP")}, "the port of the default kafka:9092"
    assert "to" not in kafka, "brokers not named: any destination, on the Kafka ports only"
    assert _egress_ports(genesys) == {(443, "TCP")}


def test_network_policy_kafka_ports_follow_the_bootstrap_servers() -> None:
    """Each distinct bootstrap port is let out; a server without a port means 9092."""
    docs = render(
        "external-kafka-sasl-ssl-values.yaml",
        sets=("networkPolicy.enabled=true", "kafka.bootstrapServers=b-1:9096\\,b-2:9096\\,b-3"),
    )
    kafka = find(docs, "NetworkPolicy")["spec"]["egress"][1]
    assert kafka["ports"] == [{"port": 9096, "protocol": "TCP"}, {"port": 9092, "protocol": "TCP"}]


def test_network_policy_customised() -> None:
    """Named peers for scrapers, brokers and Genesys; the helm test pod may still scrape."""
    docs = render("everything-enabled-values.yaml")
    policy = find(docs, "NetworkPolicy")["spec"]
    (ingress,) = policy["ingress"]
    test_pod_labels = find(docs, "Pod")["metadata"]["labels"]
    selectors = [peer.get("podSelector", {}).get("matchLabels") for peer in ingress["from"]]
    assert any(s and s.items() <= test_pod_labels.items() for s in selectors)
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    _dns, kafka, genesys, extra = policy["egress"]
    assert _egress_ports(kafka) == {(9094, "TCP")}
    assert kafka["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}}]
    assert _egress_ports(genesys) == {(443, "TCP"), (8080, "TCP")}
    assert extra["ports"] == [{"port": 8443, "protocol": "TCP"}]


# --- configuration and secrets ----------------------------------------------------------


SECRET_ENV = {
    "BRIDGE_GENESYS_CLIENT_ID",
    "BRIDGE_GENESYS_CLIENT_SECRET",
    "BRIDGE_GENESYS_EXTRA_CLIENTS",
    "BRIDGE_KAFKA_SASL_PASSWORD",
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_in_the_configmap(scenario: str) -> None:
    """Credentials never reach the ConfigMap; the pod reads them through secretKeyRef."""
    docs = render(scenario)
    data = configmap(docs)
    assert not SECRET_ENV & set(data)
    assert not [k for k in data if "SECRET" in k or "PASSWORD" in k]
    assert "Secret" not in kinds(docs), "the chart must not create the credentials Secret"
    env = env_of(docs)
    for name in SECRET_ENV & set(env):
        entry = env[name]
        if name == "BRIDGE_GENESYS_EXTRA_CLIENTS" and "value" in entry:
            continue  # composed from secretKeyRef variables, checked below
        assert set(entry) == {"name", "valueFrom"}
        assert set(entry["valueFrom"]) == {"secretKeyRef"}
    container = worker(docs)
    assert container["envFrom"][0] == {"configMapRef": {"name": f"{RELEASE}-presence-bridge"}}
    for source in container["envFrom"][1:]:
        assert set(source) <= {"configMapRef", "secretRef", "prefix"}


def test_default_secret_references() -> None:
    """The first OAuth client comes from the existing Secret with the configured keys."""
    docs = render()
    env = env_of(docs)
    assert env["BRIDGE_GENESYS_CLIENT_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-presence-bridge",
        "key": "genesys-client-id",
    }
    assert env["BRIDGE_GENESYS_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "genesys-client-secret"
    assert "BRIDGE_KAFKA_SASL_PASSWORD" not in env, "PLAINTEXT needs no SASL password"
    assert "BRIDGE_GENESYS_EXTRA_CLIENTS" not in env
    assert configmap(docs) == {
        "BRIDGE_GENESYS_REGION": "mypurecloud.com",
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "BRIDGE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "BRIDGE_TOPIC_CREATE": "true",
        "BRIDGE_TOPIC_REPLICATION_FACTOR": "3",
        "BRIDGE_TOPIC_MIN_INSYNC_REPLICAS": "2",
        "BRIDGE_ID": "presence-bridge",
        "BRIDGE_SHARD_CAPACITY": "1000",
        "BRIDGE_METRICS_PORT": "9464",
        "BRIDGE_LOG_LEVEL": "INFO",
        "BRIDGE_LOG_FORMAT": "json",
    }


def test_external_kafka_with_sasl_ssl() -> None:
    """SASL_SSL: mechanism in the ConfigMap, username and password from the Secret, CA mounted."""
    docs = render("external-kafka-sasl-ssl-values.yaml")
    data = configmap(docs)
    assert data["BRIDGE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["BRIDGE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert "BRIDGE_KAFKA_SASL_USERNAME" not in data
    assert data["BRIDGE_KAFKA_SSL_CA_LOCATION"] == "/etc/presence-bridge/kafka-ca/ca.pem"
    env = env_of(docs)
    assert env["BRIDGE_KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "presence-bridge-credentials",
        "key": "kafka-sasl-username",
    }
    assert env["BRIDGE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "presence-bridge-credentials",
        "key": "kafka-sasl-password",
    }
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "kafka-ca")
    assert mount == {"name": "kafka-ca", "mountPath": "/etc/presence-bridge/kafka-ca", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "kafka-ca")
    assert volume["secret"] == {"secretName": "kafka-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}


def test_several_oauth_clients() -> None:
    """Extra clients are read from their Secrets and composed into BRIDGE_GENESYS_EXTRA_CLIENTS."""
    docs = render("multiple-oauth-clients-values.yaml")
    env = worker(docs)["env"]
    names = [e["name"] for e in env]
    by_name = {e["name"]: e for e in env}
    assert by_name["BRIDGE_GENESYS_CLIENT_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "genesys-primary",
        "key": "client-id",
    }
    for n in (2, 3):
        for part, key in (("ID", "id"), ("SECRET", "secret")):
            ref = by_name[f"GENESYS_CLIENT_{part}_{n}"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "genesys-extra", "key": f"client-{n}-{key}"}
            # $(VAR) expansion only sees variables defined earlier in the list.
            assert names.index(f"GENESYS_CLIENT_{part}_{n}") < names.index("BRIDGE_GENESYS_EXTRA_CLIENTS")
    composed = json.loads(by_name["BRIDGE_GENESYS_EXTRA_CLIENTS"]["value"])
    assert composed == [
        {"clientId": "$(GENESYS_CLIENT_ID_2)", "clientSecret": "$(GENESYS_CLIENT_SECRET_2)"},
        {"clientId": "$(GENESYS_CLIENT_ID_3)", "clientSecret": "$(GENESYS_CLIENT_SECRET_3)"},
    ]
    data = configmap(docs)
    assert data["BRIDGE_KAFKA_SASL_USERNAME"] == "presence-bridge"
    assert data["BRIDGE_KAFKA_SSL_CA_LOCATION"] == "/etc/presence-bridge/kafka-ca/ca.crt"
    assert find(docs, "Deployment")["spec"]["replicas"] == 5


def test_topics_are_replicated_by_default() -> None:
    """RF 3 and min.insync 2 unless told otherwise; null leaves the worker's default."""
    data = configmap(render())
    assert (data["BRIDGE_TOPIC_REPLICATION_FACTOR"], data["BRIDGE_TOPIC_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    assert "BRIDGE_KAFKA_CONFIG" not in data, "an empty pass-through sets nothing"
    data = configmap(
        render(sets=("kafka.topics.replicationFactor=null", "kafka.topics.minInsyncReplicas=null"))
    )
    assert "BRIDGE_TOPIC_REPLICATION_FACTOR" not in data
    assert "BRIDGE_TOPIC_MIN_INSYNC_REPLICAS" not in data


def test_min_insync_above_the_replication_factor_is_rejected(helm: Path) -> None:
    """min.insync.replicas > RF would refuse every write: the install fails."""
    proc = helm_cmd(
        "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSIONS[-1],
        "--set", "kafka.topics.replicationFactor=2", "--set", "kafka.topics.minInsyncReplicas=3",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "minInsyncReplicas" in proc.stderr


def test_mtls_scenario() -> None:
    """Client key and certificate mounted, their paths in env, the key password as a settings file."""
    docs = render("mtls-values.yaml")
    data = configmap(docs)
    assert data["BRIDGE_TOPIC_CREATE"] == "false"
    assert json.loads(data["BRIDGE_KAFKA_CONFIG"]) == {
        "client.rack": "eu-west-1a",
        "socket.keepalive.enable": True,
        "metadata.max.age.ms": 60000,
    }
    container = worker(docs)
    env = {e["name"]: e for e in container["env"]}
    assert env["BRIDGE_KAFKA_SSL_KEY_LOCATION"]["value"] == "/etc/presence-bridge/kafka-client/tls.key"
    assert env["BRIDGE_KAFKA_SSL_CERTIFICATE_LOCATION"]["value"].startswith("/etc/presence-bridge/")
    names = [e["name"] for e in container["env"]]
    assert names.index("BRIDGE_GENESYS_CLIENT_SECRET") < names.index("BRIDGE_KAFKA_SSL_KEY_LOCATION")
    assert container["envFrom"][1]["configMapRef"]["name"] == "presence-bridge-site-settings"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["secret-settings"]["mountPath"] == "/var/run/secrets/presence-bridge"
    assert mounts["kafka-client-tls"]["readOnly"] is True
    assert {"tmp", "kafka-ca"} <= set(mounts), "extra mounts come on top of the chart's own"
    volumes = {v["name"]: v for v in find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secret-settings"]["secret"]["items"] == [
        {"key": "kafka-ssl-key-password", "path": "BRIDGE_KAFKA_SSL_KEY_PASSWORD"}
    ]
    assert "BRIDGE_KAFKA_SSL_KEY_PASSWORD" not in env and "BRIDGE_KAFKA_SSL_KEY_PASSWORD" not in data


def test_extra_clients_from_a_prebuilt_secret_key() -> None:
    """extraClientsKey passes a JSON list kept in the Secret as it is."""
    env = env_of(render("everything-enabled-values.yaml"))
    assert env["BRIDGE_GENESYS_EXTRA_CLIENTS"]["valueFrom"]["secretKeyRef"] == {
        "name": "presence-bridge-credentials",
        "key": "genesys-extra-clients",
    }


def test_everything_enabled_configuration() -> None:
    """Explicit URLs, optional settings and extra config reach the ConfigMap."""
    data = configmap(render("everything-enabled-values.yaml"))
    assert data["BRIDGE_GENESYS_API_URL"] == "http://genesys-sim.sim.svc:8080"
    assert data["BRIDGE_GENESYS_LOGIN_URL"] == "http://genesys-sim.sim.svc:8080"
    assert data["BRIDGE_ROSTER_REFRESH_S"] == "300"
    assert data["BRIDGE_SHARD_CAPACITY"] == "800"
    assert data["BRIDGE_TOPIC_PRESENCE"] == "genesys.presence.v1"
    assert "BRIDGE_KAFKA_SASL_MECHANISM" not in data, "SSL without SASL sets no mechanism"


# --- values schema ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "unknownKey=1",
        "kafka.sasl.pasword=typo",
        "kafka.securityProtocol=SASL",
        "extraConfig.BRIDGE_KAFKA_SASL_PASSWORD=leak",
        "extraConfig.BRIDGE_LOG_LEVEL=DEBUG",
        "extraConfig.not_a_setting=x",
        "replicaCount=-1",
        "metrics.port=80",
        "genesys.clients=null",
        "kafka.topics.replicationFactor=0",
        "kafka.config.sasl\\.password=leak",
        "kafka.config.sasl\\.oauthbearer\\.client\\.secret=leak",
        "kafka.config.transactional\\.id=mine",
        "extraConfig.BRIDGE_TOPIC_REPLICATION_FACTOR=1",
        "extraEnv[0].name=BRIDGE_KAFKA_SSL_KEY_PASSWORD,extraEnv[0].value=leak",
        "extraVolumeMounts[0].name=x",
        "networkPolicy.genesys.ports[0]=0",
        "networkPolicy.kafka.port=9092",
        'prometheusRule.selector={job="x"}',
        "serviceMonitor.relabelings[0].action=rewrite",
    ],
)
def test_schema_rejects_bad_values(helm: Path, bad: str) -> None:
    """Unknown keys, typos, secrets in extraConfig and out-of-range numbers fail the install."""
    proc = helm_cmd("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSIONS[-1], "--set", bad)
    assert proc.returncode != 0, f"--set {bad} was accepted"
    assert "schema" in proc.stderr or "Error" in proc.stderr


def test_sasl_without_password_key_is_rejected(helm: Path) -> None:
    """A SASL protocol needs the password's Secret key."""
    proc = helm_cmd(
        "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSIONS[-1],
        "--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.passwordKey=",
    )  # fmt: skip
    assert proc.returncode != 0


CONSTRAINT_KEYWORDS = {"if", "then", "else", "not", "allOf", "anyOf", "oneOf", "propertyNames"}


def _objects_without_closed_properties(node: Any, path: str = "$") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            passthrough = str(node.get("$comment", "")).startswith(("Kubernetes ", "Helm's global"))
            if "additionalProperties" not in node and not passthrough:
                found.append(path)
            if node.get("additionalProperties") is True:
                found.append(path)
        for key, value in node.items():
            if key in CONSTRAINT_KEYWORDS:
                continue  # constraints on declared properties, not declarations
            found += _objects_without_closed_properties(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _objects_without_closed_properties(value, f"{path}[{i}]")
    return found


def test_schema_is_strict_at_every_level() -> None:
    """Every object closes its properties (false or a typed map), except Kubernetes pass-throughs."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert _objects_without_closed_properties(schema) == []


def test_schema_covers_every_value() -> None:
    """Every key of values.yaml is declared in the schema."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(sub, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "")


# --- monitoring objects -----------------------------------------------------------------


def test_service_monitor() -> None:
    """Scrapes the metrics port of this release's Service, with job=presence-bridge."""
    docs = render("everything-enabled-values.yaml")
    sm = find(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert sm["spec"]["selector"]["matchLabels"] == SELECTOR
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert {k: v for k, v in endpoint.items() if k != "relabelings"} == {
        "port": "metrics",
        "path": "/metrics",
        "interval": "15s",
        "scrapeTimeout": "10s",
    }
    svc = find(docs, "Service")
    assert SELECTOR.items() <= svc["metadata"]["labels"].items()


def test_service_monitor_labels_every_series_with_the_bridge_id() -> None:
    """A target relabeling sets bridge_id from bridgeId (so on `up` too); extra relabelings follow."""
    relabel = {"action": "replace", "targetLabel": "bridge_id", "replacement": "presence-bridge-eu"}
    sm = find(render("everything-enabled-values.yaml"), "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["relabelings"] == [relabel]
    extra = "serviceMonitor.relabelings[0].targetLabel=cluster,serviceMonitor.relabelings[0].replacement=eu-1"
    sm = find(render("everything-enabled-values.yaml", sets=(extra,)), "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["relabelings"] == [
        relabel,
        {"targetLabel": "cluster", "replacement": "eu-1"},
    ]
    assert "metricRelabelings" not in sm["spec"]["endpoints"][0], "target labels, not per-sample rewriting"


def test_prometheus_rule_selector_reaches_every_rule() -> None:
    """prometheusRule.selector replaces the job matcher in every expression."""
    selector = 'job="presence-bridge", bridge_id="presence-bridge-eu"'
    sets = ("prometheusRule.enabled=true", f"prometheusRule.selector={selector.replace(',', chr(92) + ',')}")
    rule = find(render(sets=sets), "PrometheusRule")
    source = {
        r["alert"]: r["expr"]
        for g in yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"]
        for r in g["rules"]
    }
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert r["expr"] == source[r["alert"]].replace('job="presence-bridge"', selector)
            assert r["expr"].count(selector) == source[r["alert"]].count('job="presence-bridge"') > 0


def test_prometheus_rule_is_the_alert_file() -> None:
    """With default settings the PrometheusRule is files/alerts.yaml, selecting this release's fleet."""
    docs = render(sets=("prometheusRule.enabled=true",))
    rule = find(docs, "PrometheusRule")
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    fleet = 'job="presence-bridge", bridge_id="presence-bridge"'
    for group in source["groups"]:
        for r in group["rules"]:
            r["expr"] = r["expr"].replace('job="presence-bridge"', fleet)
    assert rule["spec"] == source
    assert "{{ $labels.shard }}" in json.dumps(rule["spec"]), "templates must reach Prometheus untouched"


def test_chart_rules_alert_on_a_vanished_fleet_beside_a_live_one(promtool: Path, tmp_path: Path) -> None:
    """The rendered rules, run by promtool: fleet eu's targets vanish while us is up; eu's rules fire."""
    docs = render(sets=("prometheusRule.enabled=true", "bridgeId=presence-bridge-eu"))
    spec = find(docs, "PrometheusRule")["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    down = next(r for g in spec["groups"] for r in g["rules"] if r["alert"] == "BridgeDown")
    annotations = {
        k: " ".join(v.replace("{{ $labels.job }}", "presence-bridge").split())
        for k, v in down["annotations"].items()
    }
    eu = 'up{job="presence-bridge", bridge_id="presence-bridge-eu", instance="eu-w1:9464"}'
    us = 'up{job="presence-bridge", bridge_id="presence-bridge-us", instance="us-w1:9464"}'
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                # eu's last sample is at 1m: stale after the 5m lookback (absent from
                # 7m), so BridgeDown fires at 9m; us is up throughout.
                "interval": "1m",
                "input_series": [{"series": eu, "values": "1 1"}, {"series": us, "values": "1x12"}],
                "alert_rule_test": [
                    {"eval_time": "8m", "alertname": "BridgeDown", "exp_alerts": []},
                    {
                        "eval_time": "9m",
                        "alertname": "BridgeDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "job": "presence-bridge",
                                    "bridge_id": "presence-bridge-eu",
                                },
                                "exp_annotations": annotations,
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "rules.test.yaml").write_text(yaml.safe_dump(test))
    run_tool(promtool, "test", "rules", tmp_path / "rules.test.yaml", cwd=tmp_path)


def test_prometheus_rule_customisation() -> None:
    """Extra rule labels, disabled alerts and a runbook base URL are applied."""
    rule = find(render("everything-enabled-values.yaml"), "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    names = {r["alert"] for r in alerts}
    assert "BridgeRosterUnassigned" not in names
    assert len(names) == 8
    base = "https://git.example.net/platform/presence-bridge/-/blob/main/deploy/RUNBOOK.md#"
    for alert in alerts:
        assert alert["labels"]["team"] == "contact-centre-platform"
        assert alert["labels"]["severity"]
        assert alert["annotations"]["runbook_url"] == base + alert["alert"].lower()


def test_grafana_dashboard_configmap() -> None:
    """The sidecar label, the chosen namespace, and the dashboard file as it is."""
    docs = render("everything-enabled-values.yaml")
    cm = find(docs, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Contact centre"}
    shipped = (CHART / "files" / "dashboard.json").read_text()
    assert cm["data"]["presence-bridge.json"] == shipped.rstrip("\n")
    assert json.loads(cm["data"]["presence-bridge.json"])["uid"] == "presence-bridge"


def test_helm_test_pod_scrapes_the_metrics_service() -> None:
    """`helm test` runs a pod that fetches /metrics from the Service and needs bridge_build_info."""
    docs = render()
    pod = find(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    script = pod["spec"]["containers"][0]["args"][0]
    assert f"http://{RELEASE}-presence-bridge-metrics:9464/metrics" in script
    assert "bridge_build_info" in script
    compile(script, "helm-test", "exec")


def test_notes_explain_the_secret(helm: Path, tmp_path: Path) -> None:
    """NOTES.txt names the Secret and the keys to create."""
    # `helm template` skips NOTES.txt and `helm install --dry-run` needs a
    # cluster, so a copy of the chart renders it through `tpl` into a manifest.
    chart = tmp_path / "presence-bridge"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n'
    )
    proc = helm_cmd(
        "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[-1],
        "--show-only", "templates/zz-notes.yaml",
        "-f", str(CHART / "ci" / "external-kafka-sasl-ssl-values.yaml"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    notes = yaml.safe_load(proc.stdout)["notes"]
    assert "create secret generic presence-bridge-credentials" in notes
    for key in ("genesys-client-id", "genesys-client-secret", "kafka-sasl-username", "kafka-sasl-password"):
        assert f"--from-literal={key}=" in notes
    assert "helm test pb -n contact-centre" in notes
