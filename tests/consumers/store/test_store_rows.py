"""Pure mapping of result objects to tag rows (no database)."""

from __future__ import annotations

import pytest
from store_factories import classify, detect, tags_fn

from consumers.store.rows import DerivedTag, derive_tags


def test_classify_is_one_tag_without_threshold() -> None:
    assert derive_tags(classify(label="ford", score=0.7)) == [
        DerivedTag("ford", 0, 0.7, None, None)
    ]


def test_classify_without_a_label_has_no_tag() -> None:
    assert derive_tags({"type": "classify", "version": "v", "label": None, "scores": {}}) == []


def test_tags_take_their_thresholds() -> None:
    result = tags_fn(red=0.9, blue=0.6, green=0.1)
    result["thresholds"]["blue"] = 0.55

    assert derive_tags(result) == [
        DerivedTag("red", 0, 0.9, 0.5, None),
        DerivedTag("blue", 0, 0.6, 0.55, None),
    ]


def test_detect_numbers_repeated_labels_and_keeps_boxes() -> None:
    tags = derive_tags(detect("v1", ("logo", 0.9), ("cup", 0.8), ("logo", 0.7)))

    assert [(t.label, t.ordinal, t.box) for t in tags] == [
        ("logo", 0, (0.0, 5.0, 8.0, 25.5)),
        ("cup", 0, (10.0, 5.0, 18.0, 25.5)),
        ("logo", 1, (20.0, 5.0, 28.0, 25.5)),
    ]


def test_unknown_type_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown function result type"):
        derive_tags({"type": "caption", "version": "v1"})
