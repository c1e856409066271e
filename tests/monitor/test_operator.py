"""The operator-equivalent scrape job derived from a ServiceMonitor."""

from __future__ import annotations

from typing import Any

import pytest

from tests.monitor.operator import relabel_config, scrape_job, target_group


def _service_monitor(**endpoint: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "pb-presence-bridge", "namespace": "cc"},
        "spec": {
            "jobLabel": "app.kubernetes.io/name",
            "selector": {"matchLabels": {"app.kubernetes.io/name": "presence-bridge"}},
            "endpoints": [{"port": "metrics", "path": "/metrics", **endpoint}],
        },
    }


def test_relabelings_translate_to_prometheus_keys() -> None:
    """camelCase ServiceMonitor fields become relabel_config keys; the action is lower-cased."""
    got = relabel_config({"sourceLabels": ["a"], "targetLabel": "b", "action": "Replace", "regex": "(.*)"})
    assert got == {"source_labels": ["a"], "target_label": "b", "action": "replace", "regex": "(.*)"}
    with pytest.raises(ValueError):
        relabel_config({"bogus": 1})


def test_job_takes_the_job_label_and_user_relabelings_come_last() -> None:
    """Operator steps precede the endpoint's relabelings; metricRelabelings map too."""
    sm = _service_monitor(
        relabelings=[{"targetLabel": "bridge_id", "replacement": "eu"}],
        metricRelabelings=[{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}],
    )
    job = scrape_job(sm, "t.json", "1s", "1s")
    targets = [r.get("target_label") for r in job["relabel_configs"]]
    assert targets.index("namespace") < targets.index("job") < targets.index("bridge_id") == len(targets) - 1
    job_rule = job["relabel_configs"][targets.index("job") + 1]
    assert job_rule["source_labels"] == ["__meta_kubernetes_service_label_app_kubernetes_io_name"]
    assert job["metric_relabel_configs"] == [
        {"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"}
    ]
    assert job["job_name"] == "serviceMonitor/cc/pb-presence-bridge/0"


def test_target_group_carries_the_endpoints_role_labels() -> None:
    """The Service's and pod's labels appear as __meta_kubernetes_* labels the selector can keep."""
    service = {
        "metadata": {"name": "pb-metrics", "labels": {"app.kubernetes.io/name": "presence-bridge"}},
        "spec": {"ports": [{"name": "metrics", "targetPort": "metrics"}]},
    }
    deployment = {
        "spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}}}
    }
    group = target_group("127.0.0.1:1", "pod-1", "cc", service, deployment)
    labels = group["labels"]
    assert labels["__meta_kubernetes_service_label_app_kubernetes_io_name"] == "presence-bridge"
    assert labels["__meta_kubernetes_service_labelpresent_app_kubernetes_io_name"] == "true"
    assert labels["__meta_kubernetes_pod_label_app"] == "x"
    assert labels["__meta_kubernetes_endpoint_port_name"] == "metrics"
    assert group["targets"] == ["127.0.0.1:1"]


def test_unsupported_fields_are_refused() -> None:
    """targetLabels would add labels the harness does not reproduce: refuse rather than drift."""
    sm = _service_monitor()
    sm["spec"]["targetLabels"] = ["team"]
    with pytest.raises(ValueError):
        scrape_job(sm, "t.json", "1s", "1s")
