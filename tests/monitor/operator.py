"""The Prometheus scrape job the Prometheus Operator would generate for the chart's ServiceMonitor.

The live monitoring tests scrape worker processes on loopback, not pods, so
there is no Kubernetes service discovery. Instead each worker is a
``file_sd_configs`` target that carries the ``__meta_kubernetes_*`` labels the
``endpoints`` role would give the pod behind the chart's Service
(:func:`target_group`), and the job's ``relabel_configs`` are the ones the
operator generates for a ServiceMonitor endpoint, followed by the
endpoint's own ``relabelings`` (:func:`scrape_job`); its ``metricRelabelings``
become ``metric_relabel_configs``. Whatever labels the chart's ServiceMonitor
adds or rewrites, the series the tests query carry them exactly as in a
cluster.

Target labels the operator sets for a ServiceMonitor endpoint (prometheus-operator
``generateServiceMonitorConfig``, role ``endpoints``), in this order:

- keep only the Service whose labels match ``spec.selector.matchLabels`` and
  the endpoint port named ``endpoints[].port``;
- ``node`` / ``pod`` from the endpoint address's target (kind ``Node``/``Pod``);
- drop pods in phase ``Failed`` or ``Succeeded``;
- ``namespace`` ← the namespace, ``service`` ← the Service name, ``pod`` ← the
  pod name, ``container`` ← the container name;
- ``job`` ← the Service name, overridden by the Service label named by
  ``spec.jobLabel`` when that label is set and non-empty;
- ``endpoint`` ← the endpoint's port name;
- then the endpoint's ``relabelings``;
- ``instance`` is Prometheus's default, the target address.

Not reproduced: ``targetLabels``/``podTargetLabels`` (the chart sets none;
:func:`scrape_job` refuses them), and the operator's hashmod sharding step
(one shard keeps every target).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "OPERATOR_SETS",
    "job_name",
    "relabel_config",
    "sanitize",
    "scrape_job",
    "target_group",
]

#: The target labels the operator itself sets (beyond ``instance``), see the module docstring.
OPERATOR_SETS = ("namespace", "service", "pod", "container", "job", "endpoint")
#: ServiceMonitor relabeling field → Prometheus relabel_config key.
_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def sanitize(name: str) -> str:
    """A Kubernetes label name as it appears in ``__meta_kubernetes_*_label_<name>``."""
    return _INVALID_LABEL_CHARS.sub("_", name)


def relabel_config(relabeling: dict[str, Any]) -> dict[str, Any]:
    """One ServiceMonitor ``relabelings``/``metricRelabelings`` entry as a Prometheus relabel_config."""
    unknown = set(relabeling) - set(_RELABEL_KEYS)
    if unknown:
        raise ValueError(f"unsupported relabeling fields {sorted(unknown)}")
    out = {_RELABEL_KEYS[key]: value for key, value in relabeling.items()}
    if "action" in out:
        out["action"] = str(out["action"]).lower()
    return out


def job_name(service_monitor: dict[str, Any], index: int = 0) -> str:
    """The operator's job name for endpoint ``index`` of a ServiceMonitor."""
    meta = service_monitor["metadata"]
    return f"serviceMonitor/{meta.get('namespace', '')}/{meta['name']}/{index}"


def _operator_relabelings(service_monitor: dict[str, Any], endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    spec = service_monitor["spec"]
    out: list[dict[str, Any]] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    for key, value in sorted(spec["selector"].get("matchLabels", {}).items()):
        name = sanitize(key)
        out.append(
            {
                "action": "keep",
                "source_labels": [
                    f"__meta_kubernetes_service_label_{name}",
                    f"__meta_kubernetes_service_labelpresent_{name}",
                ],
                "regex": f"({value});true",
            }
        )
    out.append(
        {
            "action": "keep",
            "source_labels": ["__meta_kubernetes_endpoint_port_name"],
            "regex": endpoint["port"],
        }
    )
    for kind, label in (("Node", "node"), ("Pod", "pod")):
        out.append(
            {
                "source_labels": [
                    "__meta_kubernetes_endpoint_address_target_kind",
                    "__meta_kubernetes_endpoint_address_target_name",
                ],
                "separator": ";",
                "regex": f"{kind};(.*)",
                "replacement": "${1}",
                "target_label": label,
            }
        )
    out.append(
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}
    )
    for source, target in (
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_service_name", "service"),
        ("__meta_kubernetes_pod_name", "pod"),
        ("__meta_kubernetes_pod_container_name", "container"),
    ):
        out.append({"source_labels": [source], "target_label": target})
    out.append(
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"}
    )
    if spec.get("jobLabel"):
        out.append(
            {
                "source_labels": [f"__meta_kubernetes_service_label_{sanitize(spec['jobLabel'])}"],
                "target_label": "job",
                "regex": "(.+)",
                "replacement": "${1}",
            }
        )
    out.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    return out


def scrape_job(
    service_monitor: dict[str, Any], sd_file: str, interval: str, timeout: str, index: int = 0
) -> dict[str, Any]:
    """The scrape_config of endpoint ``index``, with targets from ``sd_file`` and the given timings.

    ``interval``/``timeout`` replace the endpoint's own (the tests scrape every
    second); everything else is the endpoint's.
    """
    spec = service_monitor["spec"]
    for unsupported in ("targetLabels", "podTargetLabels", "sampleLimit"):
        if spec.get(unsupported):
            raise ValueError(f"ServiceMonitor {unsupported} is not reproduced by the test harness")
    endpoint = spec["endpoints"][index]
    return {
        "job_name": job_name(service_monitor, index),
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "scrape_interval": interval,
        "scrape_timeout": timeout,
        "metrics_path": endpoint.get("path", "/metrics"),
        "scheme": endpoint.get("scheme", "http"),
        "file_sd_configs": [{"files": [sd_file], "refresh_interval": "1s"}],
        "relabel_configs": _operator_relabelings(service_monitor, endpoint)
        + [relabel_config(r) for r in endpoint.get("relabelings", [])],
        "metric_relabel_configs": [relabel_config(r) for r in endpoint.get("metricRelabelings", [])],
    }


def _label_meta(prefix: str, labels: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in labels.items():
        out[f"{prefix}_label_{sanitize(key)}"] = str(value)
        out[f"{prefix}_labelpresent_{sanitize(key)}"] = "true"
    return out


def target_group(
    address: str, pod_name: str, namespace: str, service: dict[str, Any], deployment: dict[str, Any]
) -> dict[str, Any]:
    """A file_sd target group for one worker, labelled as the endpoints role labels its pod.

    ``service`` and ``deployment`` are the chart's rendered objects; the
    endpoint port is the Service port whose ``targetPort`` names the
    container's port.
    """
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    port = service["spec"]["ports"][0]
    labels = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        **_label_meta("__meta_kubernetes_service", service["metadata"].get("labels", {})),
        "__meta_kubernetes_endpoint_port_name": port["name"],
        "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP"),
        "__meta_kubernetes_endpoint_ready": "true",
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": pod_name,
        "__meta_kubernetes_pod_name": pod_name,
        "__meta_kubernetes_pod_ip": address.rsplit(":", 1)[0],
        **_label_meta("__meta_kubernetes_pod", template["metadata"].get("labels", {})),
        "__meta_kubernetes_pod_container_name": container["name"],
        "__meta_kubernetes_pod_container_port_name": str(port.get("targetPort", port["name"])),
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_ready": "true",
    }
    return {"targets": [address], "labels": labels}
