"""Failpoint specs: the ``~MATCH`` filter acts only on hits whose subjects match."""

from __future__ import annotations

import pytest

from consumers import failpoints


def test_match_filter_selects_subjects(monkeypatch: pytest.MonkeyPatch) -> None:
    points = failpoints.parse("store=raise@1x2~poison")
    point = points["store"]
    assert (point.action, point.match, point.times) == ("raise", "poison", 2)
    monkeypatch.setattr(failpoints, "_ACTIVE", points)
    failpoints.hit("store", ["s3://b/ok", "s3://b/fine"])  # no match: nothing happens
    with pytest.raises(failpoints.FailpointError):
        failpoints.hit("store", ["s3://b/ok", "s3://b/poison-1"])
    assert point.hits == 1


def test_unknown_point_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown failpoint"):
        failpoints.parse("nowhere=raise~x")
