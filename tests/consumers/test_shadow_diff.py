"""``tagfleet diff``'s report (issue 16 item 4): pure logic on (asset, serving, shadow)
triples, and the command's answer when the store holds no shadow results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumers.cli import main
from consumers.shadow_diff import diff, markdown
from consumers.store import TagStore


def _classify(version: str, **scores: float) -> dict[str, Any]:
    label = max(scores, key=lambda k: scores[k])
    return {
        "type": "classify",
        "version": version,
        "label": label,
        "score": scores[label],
        "scores": scores,
    }


def _tags(version: str, **scores: float) -> dict[str, Any]:
    tags = [{"label": k, "score": v} for k, v in scores.items() if v >= 0.5]
    return {"type": "tags", "version": version, "tags": tags, "scores": scores}


def test_the_report_counts_labels_top_changes_and_shifts() -> None:
    pairs = [
        ("s3://b/a", _classify("v1", cat=0.9, dog=0.1), _classify("v2", cat=0.8, dog=0.2)),
        ("s3://b/b", _classify("v1", cat=0.3, dog=0.7), _classify("v2", cat=0.6, dog=0.4)),
        ("s3://b/c", _classify("v1", cat=0.2, dog=0.8), _classify("v2", cat=0.1, dog=0.9)),
    ]

    report = diff("pet", pairs, top=2, link_template="https://dam/?id={asset_id}")

    assert report["assets"] == 3 and report["agreement"] == pytest.approx(2 / 3)
    assert report["versions"] == [{"serving": "v1", "shadow": "v2"}]
    assert report["labels"] == {
        "cat": {"added": 1, "removed": 0},
        "dog": {"added": 0, "removed": 1},
    }
    (change,) = report["top_label_changes"]
    assert change == {
        "asset_id": "s3://b/b",
        "from": "dog",
        "from_score": 0.7,
        "to": "cat",
        "to_score": 0.6,
    }
    assert report["score_shift"]["cat"]["mean"] == pytest.approx((-0.1 + 0.3 - 0.1) / 3)
    assert [m["asset_id"] for m in report["most_changed"]] == ["s3://b/b", "s3://b/a"]
    assert report["most_changed"][0]["link"] == "https://dam/?id=s3://b/b"
    assert report["labels_dropped"] == [] and report["labels_new"] == []
    text = markdown(report)
    assert "agreement 66.7%" in text and "- [s3://b/b](https://dam/?id=s3://b/b)" in text


def test_a_label_the_candidate_lacks_is_reported_dropped() -> None:
    pairs = [("s3://b/a", _tags("v1", red=0.9, blue=0.6), _tags("v3", red=0.8))]

    report = diff("colours", pairs)

    assert report["labels_dropped"] == ["blue"]
    assert report["labels"] == {"blue": {"added": 0, "removed": 1}}
    assert report["agreement"] == 0.0
    assert "no longer has: blue." in markdown(report)


def test_diff_without_shadow_results_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    TagStore(url).upgrade()
    monkeypatch.setenv("TAGFLEET_STORE", url)

    assert main(["diff", "pet"]) == 2

    assert "no stored results of any shadow version of 'pet'" in capsys.readouterr().err
