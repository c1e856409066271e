"""The hot path writes exactly what it wrote before it was optimised, for every frame of the corpus."""

from __future__ import annotations

import json

from tests.hotpath_corpus import FRAMES, GOLDEN, frame_digests, outcomes


def test_records_and_dead_letters_match_the_golden_file() -> None:
    """Records (topic, key, value, headers), metric labels and errors equal the frozen ones, per frame."""
    golden = json.loads(GOLDEN.read_text())
    assert golden["frames"] == frame_digests(), "the corpus changed: regenerate the golden file from old code"
    got = outcomes()
    assert [o["name"] for o in got] == [name for name, _text in FRAMES]
    for want, have in zip(golden["outcomes"], got, strict=True):
        assert have == want, want["name"]


def test_the_corpus_covers_every_outcome() -> None:
    """The golden file holds both kinds of change, drops, every DLQ reason but 'unexpected', and errors."""
    golden = json.loads(GOLDEN.read_text())["outcomes"]
    moved = {key for o in golden for key in o["metrics"]}
    reasons = {key.split(":", 1)[1] for key in moved if key.startswith("dlq:")}
    assert reasons == {"invalid_json", "not_an_object", "missing_field", "bad_type", "bad_timestamp"}
    assert {"stale:presence", "stale:routing_status", "kind:heartbeat", "kind:pong", "kind:system"} <= moved
    topics = {record[0] for o in golden for record in o["records"]}
    assert topics == {"t.presence", "t.routing", "t.state", "t.dlq"}
    assert any(o["raised"] for o in golden)
