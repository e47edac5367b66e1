"""``tagfleet dataset export`` (issue 18 item 5) on the real PostgreSQL: people's labels of one
function and tenant become the JSONL manifest ``tagfleet train`` reads, with counts, the
labels with too few samples named, and the model's confident tags only when asked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from api_harness import tagfleet

from consumers.api.queries import set_label
from consumers.domain import AssetResult, SourcePosition
from consumers.store import TagStore

pytestmark = pytest.mark.integration


def _classify(asset_id: str, label: str, score: float, tenant: str) -> AssetResult:
    return AssetResult(
        asset_id=asset_id,
        uri=asset_id,
        etag="e",
        width=10,
        height=10,
        functions={
            "shape": {
                "type": "classify",
                "version": "v1",
                "label": label,
                "score": score,
                "scores": {label: score},
            }
        },
        source=SourcePosition("assets", 0, 1),
        processed_at=datetime(2026, 12, 1, tzinfo=UTC),
        tenant=tenant,
    )


def test_export_writes_people_labels_with_counts_and_warnings(pg_url: str, tmp_path: Path) -> None:
    store = TagStore(pg_url)
    store.upgrade()
    ids = [f"s3://lib/{i}.png" for i in range(8)]
    store.save([_classify(a, "circle", 0.95 if i < 6 else 0.5, "acme") for i, a in enumerate(ids)])
    store.save([_classify("s3://other/x.png", "circle", 0.99, "globex")])
    engine = store.engine
    for a in ids[:3]:  # confirmed
        set_label(engine, "acme", a, "shape", "circle", "present", "alice")
    for a in ids[3:5]:  # corrected: circle rejected, square added
        set_label(engine, "acme", a, "shape", "circle", "absent", "alice")
        set_label(engine, "acme", a, "shape", "square", "present", "alice")
    set_label(engine, "acme", ids[5], "shape", "circle", "absent", "bob")  # rejected only
    set_label(engine, "globex", "s3://other/x.png", "shape", "triangle", "present", "eve")
    store.close()

    out = tmp_path / "people"
    env = {"TAGFLEET_STORE": pg_url}
    done = tagfleet(env, "dataset", "export", "shape", "--out", str(out), "--tenant", "acme",
                    "--min-samples", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert lines == [{"image": a, "label": "circle"} for a in ids[:3]] + [
        {"image": a, "label": "square"} for a in ids[3:5]
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"circle": 3, "square": 2}
    assert summary["left_out"] == {"only rejections": 1}
    assert summary["too_few"] == ["square"]
    assert "fewer than 3 samples of: square" in done.stderr

    # With the model's confident tags: the two unlabelled assets scored 0.5 stay out at 0.9;
    # the rejected circle of ids[5] never comes back.
    out_ai = tmp_path / "with-ai"
    done = tagfleet(env, "dataset", "export", "shape", "--out", str(out_ai), "--tenant", "acme",
                    "--include-ai", "--min-score", "0.4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in (out_ai / "manifest.jsonl").read_text().splitlines()]
    images = {x["image"]: x["label"] for x in lines}
    assert images[ids[6]] == images[ids[7]] == "circle" and ids[5] not in images
    assert json.loads((out_ai / "summary.json").read_text())["from_ai"] == 2

    missing = tagfleet(env, "dataset", "export", "nothing", "--out", str(tmp_path / "x"))
    assert missing.returncode == 1 and "no results and no human labels" in missing.stderr
