"""Taxonomy and thresholds from stored scores (pure logic of consumers.retag)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.retag.precision import calibrate
from consumers.retag.tagset import effective_key, select, tag_key, tag_set, with_tag_set
from consumers.retag.taxonomy import (
    MappingFileError,
    load_taxonomy,
    load_thresholds,
    mapping_version,
    parse_taxonomy,
    parse_threshold_flags,
)
from consumers.store.rows import derive_tags

TAXONOMY = """\
terms:
  automobile: car
  puppy: [dog, young animal]
synonyms:
  car: [auto]
parents:
  car: vehicle
  vehicle: transport
  dog: animal
drop: [blurry]
"""

TAGS = {
    "type": "tags",
    "version": "v1",
    "tags": [{"label": "automobile", "score": 0.9}],
    "scores": {"automobile": 0.9, "puppy": 0.45, "blurry": 0.8, "cat": 0.2},
    "thresholds": {"automobile": 0.5, "puppy": 0.5, "blurry": 0.5, "cat": 0.5},
}


def _tax(tmp_path: Path, text: str = TAXONOMY) -> Path:
    path = tmp_path / "taxonomy.yaml"
    path.write_text(text)
    return path


def test_a_label_becomes_its_terms_synonyms_and_ancestors(tmp_path: Path) -> None:
    taxonomy = load_taxonomy(_tax(tmp_path))
    assert taxonomy.expand("automobile") == ["car", "auto", "vehicle", "transport"]
    assert taxonomy.expand("puppy") == ["dog", "animal", "young animal"]
    assert taxonomy.expand("blurry") == []  # dropped
    assert taxonomy.expand("cat") == ["cat"]  # not mapped: itself


def test_thresholds_then_taxonomy_on_stored_scores(tmp_path: Path) -> None:
    taxonomy = load_taxonomy(_tax(tmp_path))
    # the model's thresholds: automobile and blurry reach 0.5; blurry is dropped
    labels = [t["label"] for t in tag_set(TAGS, {}, taxonomy, "v", "retag")["tags"]]
    assert labels == ["car", "auto", "vehicle", "transport"]
    # puppy at 0.4 comes in, a '*' threshold of 0.95 keeps automobile out
    got = tag_set(TAGS, {"puppy": 0.4, "*": 0.95}, taxonomy, "v", "retag")["tags"]
    assert [(t["label"], t["model_label"], t["threshold"]) for t in got] == [
        ("dog", "puppy", 0.4),
        ("animal", "puppy", 0.4),
        ("young animal", "puppy", 0.4),
    ]


def test_two_labels_reaching_one_term_keep_it_once_with_the_best_score() -> None:
    taxonomy = parse_taxonomy({"terms": {"sedan": "car", "coupe": "car"}})
    result = {"type": "tags", "scores": {"sedan": 0.7, "coupe": 0.9}, "thresholds": {}}
    tags = tag_set(result, {}, taxonomy, "v", "retag")["tags"]
    assert [(t["label"], t["score"], t["model_label"]) for t in tags] == [("car", 0.9, "coupe")]


def test_classify_top_label_gated_by_its_threshold() -> None:
    result = {"type": "classify", "label": "cat", "score": 0.6, "scores": {"cat": 0.6}}
    assert [s[0] for s in select(result, {})] == ["cat"]
    assert select(result, {"cat": 0.7}) == []
    assert [s[0] for s in select(result, {"cat": 0.6})] == ["cat"]


def test_detect_redraws_from_candidates_below_the_old_threshold() -> None:
    result = {
        "type": "detect",
        "objects": [{"label": "logo", "score": 0.8, "box": [0, 0, 5, 5]}],
        "candidates": [
            {"label": "logo", "score": 0.8, "box": [0, 0, 5, 5]},
            {"label": "text", "score": 0.2, "box": [1, 1, 4, 4]},
            {"label": "logo", "score": 0.1, "box": [6, 6, 9, 9]},
        ],
        "thresholds": {"logo": 0.5, "text": 0.5},
    }
    assert [(s[0], s[1]) for s in select(result, {})] == [("logo", 0.8)]
    assert [(s[0], s[1]) for s in select(result, {"text": 0.15})] == [("logo", 0.8), ("text", 0.2)]
    # the store's rows come from the tag set: two boxes of one label get ordinals 0 and 1
    new = with_tag_set(result, {"logo": 0.05}, None, "v", "retag")
    assert [(t.label, t.ordinal, t.box) for t in derive_tags(new)] == [
        ("logo", 0, (0.0, 0.0, 5.0, 5.0)),
        ("logo", 1, (6.0, 6.0, 9.0, 9.0)),
    ]


def test_effective_key_ignores_labels_people_decided() -> None:
    old = [tag_key("cat", 0.9, None)]
    new = [tag_key("cat", 0.9, None), tag_key("dog", 0.6, None)]
    assert effective_key(old, {}) != effective_key(new, {})
    assert effective_key(old, {"dog": "absent"}) == effective_key(new, {"dog": "absent"})
    assert effective_key(old, {"dog": "present"}) == effective_key(new, {"dog": "present"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("terms:\n  a: b\ndrop: [a]\n", "line 2: (top level): label 'a' is both mapped"),
        ("parents:\n  a: b\n  b: c\n  c: a\n", "cycle: a -> b -> c -> a"),
        ("terms:\n  ok: fine\n  bad: []\n", "line 3: terms.bad: maps to no term"),
        ("terms:\n  a: b\nsynonym:\n  b: [c]\n", "line 3: synonym"),
        ("parents:\n  y: z\n  x: x\n", "line 3: parents: 'x' is its own parent"),
        ("terms:\n  a: [b\n", "line 3: not YAML or JSON"),
        ("- a\n- b\n", "a taxonomy is a mapping"),
    ],
)
def test_a_bad_taxonomy_names_the_entry_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MappingFileError, match="taxonomy.yaml") as exc:
        load_taxonomy(_tax(tmp_path, text))
    assert message in str(exc.value)


def test_threshold_files_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("cat: 0.4\n'*': 0.7\n")
    assert load_thresholds(path) == {"cat": 0.4, "*": 0.7}
    path.write_text('{"cat": 0.4,\n "dog": 1.5}')
    with pytest.raises(MappingFileError, match=r"line 2.*'dog' is 1.5, not in 0..1"):
        load_thresholds(path)
    assert parse_threshold_flags(["cat=0.3", "a=b=0.2", "cat=0.25"]) == {"cat": 0.25, "a=b": 0.2}
    for bad in ["cat", "=0.3", "cat=high"]:
        with pytest.raises(MappingFileError, match="--threshold"):
            parse_threshold_flags([bad])


def test_mapping_version_is_a_content_hash(tmp_path: Path) -> None:
    taxonomy = load_taxonomy(_tax(tmp_path))
    same = parse_taxonomy(
        {
            "drop": ["blurry"],
            "parents": {"dog": "animal", "vehicle": "transport", "car": "vehicle"},
            "synonyms": {"car": "auto"},
            "terms": {"puppy": ["dog", "young animal"], "automobile": ["car"]},
        }
    )
    assert mapping_version(taxonomy, {"a": 0.5}) == mapping_version(same, {"a": 0.5})
    assert mapping_version(taxonomy, {"a": 0.5}) != mapping_version(taxonomy, {"a": 0.6})
    assert mapping_version(None, {}) != mapping_version(taxonomy, {})


def test_target_precision_on_peoples_labels() -> None:
    def tags(score: float) -> dict[str, object]:
        return {"type": "tags", "scores": {"cat": score}, "thresholds": {"cat": 0.5}}

    labelled = [(tags(s), "cat", "present") for s in (0.9, 0.8, 0.7, 0.35, 0.3)]
    labelled += [(tags(s), "cat", "absent") for s in (0.6, 0.32, 0.2, 0.1, 0.05)]
    labelled += [(tags(0.9), "dog", "present")]
    found = calibrate(labelled, target=0.8, min_labels=5)
    # at 0.3: 5 of 7 (0.71); at 0.35: 4 of 5 = 0.8, the lowest reaching the target
    assert found.thresholds == {"cat": 0.35}
    assert found.precision["cat"] == pytest.approx(0.8)
    assert "1 present and 0 absent" in found.skipped["dog"]
    fooled = [*labelled, (tags(0.95), "cat", "absent")]  # the best score is a wrong one
    assert "no threshold reaches" in calibrate(fooled, 0.99, 5).skipped["cat"]


def test_a_lower_detect_threshold_from_candidates_equals_running_the_head_with_it() -> None:
    """What retag draws from the stored candidates is what the model would have said."""
    import torch

    from models.backbones import resolve_ref
    from models.heads.detect import results
    from models.manifest import Manifest

    gen = torch.Generator().manual_seed(3)
    raw = {
        "logits": torch.randn(1, 64, 2, generator=gen) * 2 - 2,
        "centerness": torch.randn(1, 64, generator=gen),
        "boxes": torch.rand(1, 64, 4, generator=gen).sort(dim=-1).values[..., [0, 1, 2, 3]],
    }

    def manifest(limit: float) -> Manifest:
        return Manifest(
            name="logo",
            type="detect",
            labels=["logo", "text"],
            backbone=resolve_ref("tiny-vit"),
            thresholds={"*": limit},
            head={"nms_iou": 0.5, "max_detections": 100, "max_candidates": 100},
            version="v1",
        )

    [stored] = results(raw, manifest(0.5), [(64, 64)])
    for limit in (0.1, 0.2, 0.3):
        [rerun] = results(raw, manifest(limit), [(64, 64)])
        redrawn = [(s[0], s[1], s[2]) for s in select(stored, {"*": limit})]
        assert redrawn == [(o["label"], o["score"], o["box"]) for o in rerun["objects"]]
        assert len(redrawn) > len(stored["objects"])
