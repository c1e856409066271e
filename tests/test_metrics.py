"""bridge.metrics: the batch histogram exposes exactly what prometheus_client's Histogram would."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bridge.metrics import LATENCY_BUCKETS, BatchHistogram

values = st.lists(
    st.one_of(
        st.floats(min_value=0, max_value=120, allow_nan=False),
        st.sampled_from(LATENCY_BUCKETS),  # on a bound: "le" includes it
    ),
    max_size=200,
)


def exposition(registry: CollectorRegistry) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@settings(max_examples=50)
@given(batches=st.lists(values, max_size=5))
def test_same_exposition_as_prometheus_client(batches: list[list[float]]) -> None:
    """Every bucket line and the count match sample for sample; the sum up to float rounding."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch_histogram = BatchHistogram("t_seconds", "doc", LATENCY_BUCKETS, ours)
    reference = Histogram("t_seconds", "doc", buckets=LATENCY_BUCKETS, registry=theirs)
    for batch in batches:
        batch_histogram.observe_many(batch)
        for value in batch:
            reference.observe(value)
    mine, expected = exposition(ours), exposition(theirs)
    expected.pop("t_seconds_created", None)
    assert mine.keys() == expected.keys()
    for name, value in expected.items():
        if name == "t_seconds_sum":
            assert mine[name] == pytest.approx(value)
        else:
            assert mine[name] == value, name
    assert batch_histogram.count() == sum(len(b) for b in batches)


def test_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        BatchHistogram("bad_seconds", "doc", (0.1, 0.05), CollectorRegistry())


def test_readme_lists_every_exported_metric() -> None:
    """README "Metrics" names every bridge_ series the worker exports, with its type."""
    import re
    from pathlib import Path

    from bridge import metrics

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    for family in metrics.REGISTRY.collect():
        if not family.name.startswith("bridge_"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        row = re.search(rf"^\| `{name}(\{{[a-z_,]+\}})?` \| (\w+) \|", section, re.MULTILINE)
        assert row, f"{name} missing from README Metrics"
        assert row.group(2) == family.type, name
