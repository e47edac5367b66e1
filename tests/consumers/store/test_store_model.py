"""Property: any sequence of save / remove / re-save leaves the store equal to a simple model
(a dict of current results), on SQLite."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_factories import T0, classify, detect, make_result, table_rows, tags_fn

from consumers.domain import AssetResult, SourcePosition
from consumers.store import TagStore
from consumers.store.rows import derive_tags

ASSETS = ("s3://b/one.jpg", "s3://b/two.jpg", "s3://b/three.jpg")
LABELS = ("red", "cup", "logo")
SCORES = st.sampled_from([0.1, 0.5, 0.7, 0.95])

function_results = st.one_of(
    st.builds(
        lambda v, label, s: classify(v, label, s),
        st.sampled_from(["v1", "v2"]),
        st.sampled_from(LABELS),
        SCORES,
    ),
    st.builds(
        lambda v, r, c: tags_fn(v, red=r, cup=c), st.sampled_from(["v1", "v2"]), SCORES, SCORES
    ),
    st.builds(
        lambda v, objs: detect(v, *objs),
        st.sampled_from(["v1", "v2"]),
        st.lists(st.tuples(st.sampled_from(LABELS), SCORES), min_size=1, max_size=3),
    ),
)


@st.composite
def results(draw: st.DrawFn) -> AssetResult:
    functions = draw(
        st.dictionaries(st.sampled_from(["make", "colour", "logos"]), function_results, max_size=3)
    )
    return make_result(
        draw(st.sampled_from(ASSETS)),
        functions,
        etag=draw(st.sampled_from(["e1", "e2", None])),
        offset=draw(st.integers(0, 1000)),
        minutes=draw(st.integers(0, 60)),
    )


operations = st.lists(
    st.one_of(
        st.tuples(st.just("save"), st.lists(results(), min_size=1, max_size=4)),
        st.tuples(st.just("remove"), st.lists(st.sampled_from(ASSETS), max_size=3)),
    ),
    max_size=12,
)


@dataclass
class Model:
    """asset -> function -> (etag, result object, source, processed_at)."""

    current: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)

    def save(self, batch: list[AssetResult]) -> None:
        """The contract: per (asset, function) the batch's last result object counts; it is
        written unless the stored one has the same version and etag."""
        last = {(r.asset_id, name): (r, obj) for r in batch for name, obj in r.functions.items()}
        for (asset_id, name), (r, obj) in last.items():
            functions = self.current.setdefault(asset_id, {})
            old = functions.get(name)
            if old is None or (old[1]["version"], old[0]) != (obj["version"], r.etag):
                functions[name] = (r.etag, obj, r.source, r.processed_at)

    def remove(self, ids: list[str]) -> None:
        for asset_id in ids:
            self.current.pop(asset_id, None)

    def tags(self, asset_id: str) -> list[tuple[Any, ...]]:
        out = []
        for name, (_etag, obj, source, processed_at) in self.current.get(asset_id, {}).items():
            for t in derive_tags(obj):
                out.append(
                    (
                        name,
                        t.label,
                        t.ordinal,
                        t.score,
                        t.threshold,
                        t.box,
                        obj["version"],
                        source,
                        processed_at,
                    )
                )
        return sorted(out, key=lambda row: row[:3])


@pytest.fixture(scope="module")
def model_store() -> Iterator[tuple[TagStore, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'model.db'}"
        store = TagStore(url)
        store.upgrade()
        yield store, url
        store.close()


@settings(
    max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_store_equals_model(model_store: tuple[TagStore, str], ops: list[Any]) -> None:
    store, url = model_store
    with store.engine.begin() as conn:  # a fresh, empty store for every example
        for table in ("tags", "function_results", "assets"):
            conn.exec_driver_sql(f"DELETE FROM {table}")  # noqa: S608
    model = Model()

    for kind, arg in ops:
        if kind == "save":
            store.save(arg)
            model.save(arg)
        else:
            store.remove(arg, SourcePosition("assets", 0, 1))
            model.remove(arg)

        for asset_id in ASSETS:
            stored = [
                (
                    t.function,
                    t.label,
                    t.ordinal,
                    t.score,
                    t.threshold,
                    t.box,
                    t.model_version,
                    t.source,
                    t.created_at,
                )
                for t in store.tags_for_asset(asset_id)
            ]
            assert stored == model.tags(asset_id)
        expected_versions = {
            a: {name: v[1]["version"] for name, v in fns.items()}
            for a, fns in model.current.items()
            if fns
        }
        assert store.current_versions(ASSETS) == expected_versions
        for label in LABELS:
            expected = sorted(
                a for a in ASSETS if any(t[1] == label and t[3] >= 0.5 for t in model.tags(a))
            )
            assert store.assets_with_label(label, 0.5) == expected

    # The raw results stored are the model's, all scores included.
    stored_results = {(r[0], r[1]): r[5] for r in table_rows(url)["function_results"]}
    assert set(stored_results) == {(a, f) for a, fns in model.current.items() for f in fns}
    assert T0.tzinfo is not None
