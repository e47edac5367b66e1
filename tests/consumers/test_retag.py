"""tagfleet retag over the real store (PostgreSQL and SQLite) and a real Kafka topic (issue 19
item 2): new thresholds change exactly the tags the stored scores imply, no model is loaded,
result events go out for the assets whose effective tags changed and only those; a taxonomy
shows in the API's effective tags and search; the write stage applies the active mapping."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_harness import ApiProcess, asset_path, json_of, make_key
from harness import (
    COLOURS,
    ConsumerProcess,
    env_for,
    free_port,
    group_lag,
    native_event,
    produce,
    read_topic,
    upload_images,
    wait_until,
)
from kafka import KafkaConsumer, TopicPartition

from consumers.cli import main
from consumers.domain import AssetResult, SourcePosition, TransientError
from consumers.retag.taxonomy import load_taxonomy, mapping_version
from consumers.store import TagStore
from consumers.store.models import human_labels, tags
from consumers.store.tagsets import ActiveMapping, StoredResult

pytestmark = pytest.mark.integration

LABELS = ("red", "blue", "green", "cat")
OLD = 0.5  # the model's threshold of every label
NEW = {"red": 0.7, "blue": 0.3, "*": 0.45}  # the threshold file


def _tags_result(scores: dict[str, float]) -> dict[str, Any]:
    return {
        "type": "tags",
        "version": "v1",
        "tags": sorted(
            ({"label": k, "score": v} for k, v in scores.items() if v >= OLD),
            key=lambda t: -t["score"],
        ),
        "scores": scores,
        "thresholds": dict.fromkeys(scores, OLD),
    }


def _detect_result() -> dict[str, Any]:
    candidates = [
        {"label": "logo", "score": 0.8, "box": [0.0, 0.0, 10.0, 10.0]},
        {"label": "logo", "score": 0.2, "box": [20.0, 20.0, 30.0, 30.0]},
        {"label": "text", "score": 0.08, "box": [1.0, 2.0, 3.0, 4.0]},
    ]
    return {
        "type": "detect",
        "version": "v1",
        "objects": candidates[:1],
        "candidates": candidates,
        "thresholds": {"logo": 0.5, "text": 0.5},
    }


def _asset(i: int, scores: dict[str, float], tenant: str = "acme") -> AssetResult:
    return AssetResult(
        asset_id=f"s3://lib/{i:03d}.jpg",
        uri=f"s3://lib/{i:03d}.jpg",
        etag="e1",
        width=64,
        height=48,
        functions={
            "colours": _tags_result(scores),
            "make": {"type": "classify", "version": "v1", "label": "honda", "score": 0.9},
            "logos": _detect_result(),
        },
        source=SourcePosition("assets", 0, i),
        processed_at=datetime(2026, 12, 1, tzinfo=UTC),
        tenant=tenant,
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on each backend in turn."""
    return str(request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url"))


def _stored_tags(url: str, function: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    t = tags.c
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        query = (
            sa.select(t.asset_id, t.label, t.score, t.x1, t.tag_source, t.mapping_version)
            .where(t.function == function)
            .order_by(t.asset_id, t.label, t.ordinal)
        )
        for row in conn.execute(query):
            out.setdefault(row[0], []).append(tuple(row[1:]))
    engine.dispose()
    return out


def _end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    total = sum(consumer.end_offsets(parts).values())
    consumer.close()
    return total


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a backbone (open_clip) or a fleet fails the test."""
    import open_clip

    import models.backbones
    import models.fleet

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("retag loaded a model")

    monkeypatch.setattr(models.backbones, "load_backbone", refuse)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)
    monkeypatch.setattr(open_clip, "create_model", refuse)
    monkeypatch.setattr(models.fleet, "load_fleet", refuse, raising=False)


def test_a_threshold_file_changes_exactly_what_the_scores_imply_and_announces_only_that(
    store_url: str,
    tmp_path: Path,
    new_topic: Any,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(19)
    scores = {i: {label: round(rng.random(), 4) for label in LABELS} for i in range(60)}
    # a person rejected blue on asset 0 and confirmed cat on asset 1: blue and cat crossing
    # their thresholds there changes nothing anybody sees
    scores[0] |= {"red": 0.9, "blue": 0.4, "green": 0.1, "cat": 0.1}
    scores[1] |= {"red": 0.9, "blue": 0.1, "green": 0.1, "cat": 0.48}
    store = TagStore(store_url)
    store.upgrade()
    store.save([_asset(i, s) for i, s in scores.items()])
    now = datetime(2026, 12, 2, tzinfo=UTC)
    engine = sa.create_engine(store_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(human_labels),
            [
                {"asset_id": "s3://lib/000.jpg", "function": "colours", "label": "blue"}
                | {"decision": "absent", "actor": "ann", "decided_at": now},
                {"asset_id": "s3://lib/001.jpg", "function": "colours", "label": "cat"}
                | {"decision": "present", "actor": "ann", "decided_at": now},
            ],
        )
    engine.dispose()
    before = _stored_tags(store_url, "colours")
    store.close()

    topic = new_topic(partitions=2, prefix="retag")
    (tmp_path / "thresholds.yaml").write_text("red: 0.7\nblue: 0.3\n'*': 0.45\n")
    _no_model(monkeypatch)
    monkeypatch.setenv("TAGFLEET_STORE", store_url)
    monkeypatch.setenv("TAGFLEET_BOOTSTRAP_SERVERS", kafka_bootstrap)
    argv = ["retag", "colours", "--thresholds", str(tmp_path / "thresholds.yaml")]
    argv += ["--results-topic", topic, "--batch-size", "7", "--no-progress"]
    assert main(argv) == 0

    # the direct computation from the scores
    def limit(label: str) -> float:
        return NEW.get(label, NEW["*"])

    expected = {
        f"s3://lib/{i:03d}.jpg": sorted(
            (label, s) for label, s in scores[i].items() if s >= limit(label)
        )
        for i in scores
    }
    version = mapping_version(None, NEW)
    after = _stored_tags(store_url, "colours")
    assert {a: sorted((r[0], r[1]) for r in rows) for a, rows in after.items()} == {
        a: tags_ for a, tags_ in expected.items() if tags_
    }
    assert {(r[3], r[4]) for rows in after.values() for r in rows} == {("retag", version)}
    # the other functions are as they were
    assert set(_stored_tags(store_url, "make")) == set(expected)

    old = {a: sorted((r[0], r[1]) for r in rows) for a, rows in before.items()}
    changed = {a for a in expected if expected[a] != old.get(a, [])}
    blind = {"s3://lib/000.jpg": "blue", "s3://lib/001.jpg": "cat"}  # people decided these
    for asset, label in blind.items():
        if {t for t in expected[asset] if t[0] != label} == {
            t for t in old.get(asset, []) if t[0] != label
        }:
            changed.discard(asset)
    assert "s3://lib/000.jpg" not in changed and "s3://lib/001.jpg" not in changed
    assert 10 < len(changed) < len(expected)  # the test is not vacuous
    records = read_topic(kafka_bootstrap, topic, expected=len(changed), timeout_s=30)
    assert _end_offsets(kafka_bootstrap, topic) == len(changed)  # nothing else was sent
    events = {r.key.decode(): json.loads(r.value) for r in records}
    assert set(events) == changed
    for asset, event in events.items():
        tag_set = event["functions"]["colours"]["tag_set"]
        assert sorted((t["label"], t["score"]) for t in tag_set["tags"]) == expected[asset]
        assert tag_set["source"] == "retag" and tag_set["mapping_version"] == version
        assert event["tenant"] == "acme" and event["uri"] == asset

    # the same mapping again: nothing to write, nothing to announce
    assert main(argv) == 0
    assert _stored_tags(store_url, "colours") == after
    assert _end_offsets(kafka_bootstrap, topic) == len(changed)

    # detect: a threshold below the old one finds the stored boxes above the floor; every
    # asset gains a box (its event sent by the other Kafka client this time)
    argv = ["retag", "logos", "--threshold", "logo=0.1", "--results-topic", topic]
    assert main([*argv, "--kafka-client", "confluent", "--no-progress"]) == 0
    logos = _stored_tags(store_url, "logos")["s3://lib/005.jpg"]
    assert [(r[0], r[1], r[2]) for r in logos] == [("logo", 0.8, 0.0), ("logo", 0.2, 20.0)]
    assert _end_offsets(kafka_bootstrap, topic) == len(changed) + len(expected)


TAXONOMY = """\
terms:
  red: crimson
synonyms:
  crimson: [scarlet]
parents:
  crimson: warm colour
drop: [cat]
"""


def test_a_taxonomy_shows_in_effective_tags_and_search(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = TagStore(pg_url)
    store.upgrade()
    store.save([_asset(1, {"red": 0.9, "blue": 0.2, "green": 0.6, "cat": 0.8})])
    store.close()
    (tmp_path / "taxonomy.yaml").write_text(TAXONOMY)
    monkeypatch.setenv("TAGFLEET_STORE", pg_url)
    _no_model(monkeypatch)
    assert main(["taxonomy", "set", str(tmp_path / "taxonomy.yaml")]) == 0
    assert main(["retag", "colours", "--results-topic", "", "--no-progress"]) == 0
    assert "1 assets' effective tags changed" in capsys.readouterr().out
    assert main(["taxonomy", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["*"]["taxonomy"]["drop"] == ["cat"]

    asset = "s3://lib/001.jpg"
    version = mapping_version(load_taxonomy(tmp_path / "taxonomy.yaml"), {})
    server = ApiProcess(tmp_path / "api.log", pg_url)
    try:
        with server.client(make_key(pg_url, "acme", "read")) as http:
            view = json_of(http.get(asset_path(asset)))
            colours = {t["label"] for t in view["effective_tags"] if t["function"] == "colours"}
            assert colours == {"crimson", "scarlet", "warm colour", "green"}
            assert {
                (t["mapping"]["source"], t["mapping"]["version"])
                for t in view["effective_tags"]
                if t["function"] == "colours"
            } == {("retag", version)}
            for term in ("scarlet", "warm colour", "crimson"):
                found = json_of(http.get("/v1/search", params={"label": term}))
                assert [i["asset_id"] for i in found["items"]] == [asset], term
            for gone in ("cat", "red"):  # dropped; mapped to another term
                found = json_of(http.get("/v1/search", params={"label": gone}))
                assert found["items"] == [], gone
    finally:
        server.stop()

    bad = tmp_path / "bad.yaml"
    bad.write_text("terms:\n  red: crimson\nparents:\n  crimson: crimson\n")
    assert main(["taxonomy", "set", str(bad)]) == 2
    assert "line 4: parents: 'crimson' is its own parent" in capsys.readouterr().err
    monkeypatch.setenv("TAGFLEET_STORE", f"sqlite:///{tmp_path / 'not-migrated.db'}")
    assert main(["retag", "colours", "--threshold", "red=0.2"]) == 2
    assert "run `tagfleet db upgrade`" in capsys.readouterr().err


@pytest.mark.slow  # the service in a fresh process on the tiny fleet: about 30 s
def test_the_consumer_applies_the_active_mapping_when_it_writes(
    stack: dict[str, str],
    kafka_bootstrap: str,
    kafka_admin: Any,
    new_topic: Any,
    new_bucket: Any,
    s3: Any,
    fleet_path: Path,
    tmp_path: Path,
) -> None:
    """The service stores and publishes the tags of the active taxonomy and thresholds."""
    store_url = f"sqlite:///{tmp_path / 'tags.db'}"
    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_text(
        "parents:\n" + "".join(f"  {c}: colour\n" for c in COLOURS) + "synonyms:\n  red: [rouge]\n"
    )
    store = TagStore(store_url)
    store.upgrade()
    # a threshold for colours' labels, as retag sets (every score is a tag); tenant b's own
    # (every score but red's), as retag --tenant b sets
    store.set_mapping(ActiveMapping("colours", None, {"*": 0.0}, "x", datetime.now(UTC)))
    b_limits = {"*": 0.0, "red": 1.0}
    store.set_mapping(ActiveMapping("colours", None, b_limits, "y", datetime.now(UTC), "b"))
    store.close()
    assert main(["taxonomy", "set", str(taxonomy), "--store", store_url]) == 0
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 6)
    topic, results = new_topic(partitions=1), new_topic(partitions=1)
    tenant_of = {k: "b" if i >= 4 else "acme" for i, k in enumerate(keys)}
    produce(kafka_bootstrap, topic, [native_event(bucket, k, tenant=tenant_of[k]) for k in keys])
    group = f"g-{topic}"
    consumer = ConsumerProcess(
        tmp_path / "consumer.log",
        env_for(stack),
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=group,
        results_topic=results,
        dlq_topic=new_topic(partitions=1),
        backfill_topic="",
        store=store_url,
        fleet=fleet_path,
        metrics_port=free_port(),
    )
    try:
        wait_until(
            lambda: group_lag(kafka_admin, kafka_bootstrap, group, topic) == 0,
            120,
            what="consumer group lag 0",
        )
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]

    expand = load_taxonomy(taxonomy).expand
    versions = {
        "acme": mapping_version(load_taxonomy(taxonomy), {"*": 0.0}),
        "b": mapping_version(load_taxonomy(taxonomy), b_limits),
    }
    stored = _stored_tags(store_url, "colours")
    events = [json.loads(r.value) for r in read_topic(kafka_bootstrap, results, expected=6)]
    assert {e["asset_id"] for e in events} == {f"s3://{bucket}/{k}" for k in keys}
    for event in events:
        result = event["functions"]["colours"]
        tenant = event["tenant"]
        version = versions[tenant]
        want: list[str] = []
        for label, _ in sorted(result["scores"].items(), key=lambda kv: -kv[1]):
            if tenant == "b" and label == "red":
                continue  # b's own threshold; acme's results keep the default's
            want += [t for t in expand(label) if t not in want]
        assert "colour" in want and ("rouge" in want) == (tenant == "acme" and "red" in want)
        assert [t["label"] for t in result["tag_set"]["tags"]] == want  # published
        assert result["tag_set"]["mapping_version"] == version
        rows = stored[event["asset_id"]]  # and stored
        assert sorted(r[0] for r in rows) == sorted(want)
        assert {(r[3], r[4]) for r in rows} == {("model", version)}


def test_target_precision_calibrates_on_peoples_labels_in_the_store(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # red: people confirmed the assets scored 0.62.. and rejected those scored ..0.58; blue:
    # two decisions only (fewer than --min-labels 5 of each)
    reds = [0.9, 0.8, 0.7, 0.66, 0.62, 0.58, 0.45, 0.4, 0.3, 0.2]
    store = TagStore(sqlite_url)
    store.upgrade()
    store.save([_asset(i, {"red": s, "blue": 0.9}) for i, s in enumerate(reds)])
    store.close()
    now = datetime(2026, 12, 2, tzinfo=UTC)
    decisions: list[dict[str, Any]] = [
        {"asset_id": f"s3://lib/{i:03d}.jpg", "function": "colours", "label": "red"}
        | {"decision": "present" if s > 0.6 else "absent", "actor": "ann", "decided_at": now}
        for i, s in enumerate(reds)
    ]
    decisions += [
        {"asset_id": f"s3://lib/{i:03d}.jpg", "function": "colours", "label": "blue"}
        | {"decision": "present", "actor": "ann", "decided_at": now}
        for i in (0, 1)
    ]
    engine = sa.create_engine(sqlite_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.insert(human_labels), decisions)
    engine.dispose()
    monkeypatch.setenv("TAGFLEET_STORE", sqlite_url)
    # no Kafka to announce to: refused before anything is activated or written
    import consumers.retag.cli

    def no_broker(kafka: Any) -> Any:
        raise RuntimeError("NoBrokersAvailable")

    with monkeypatch.context() as patch:
        patch.setattr(consumers.retag.cli, "_producer", no_broker)
        assert main(["retag", "colours", "--threshold", "red=0.1"]) == 2
    assert "cannot reach Kafka to publish result events" in capsys.readouterr().err
    store = TagStore(sqlite_url)
    assert store.active_mappings() == {}
    store.close()
    argv = ["retag", "colours", "--target-precision", "0.95", "--results-topic", ""]
    assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "red: threshold 0.6200 (precision 1.000 on its labels)" in err
    assert "blue: threshold kept: 2 present and 0 absent labels; 5 of each needed" in err
    store = TagStore(sqlite_url)
    assert store.active_mappings()[("colours", "*")].thresholds == {"red": 0.62}
    store.close()
    red = {
        a for a, rows in _stored_tags(sqlite_url, "colours").items() for r in rows if r[0] == "red"
    }
    assert red == {f"s3://lib/{i:03d}.jpg" for i, s in enumerate(reds) if s >= 0.62}


class _FlakyStore:
    """Two stored results; the first read and the first write fail as a restart would."""

    def __init__(self) -> None:
        self.reads = self.writes = 0
        self.written: list[str] = []

    def stored_results(
        self, function: str, tenant: str | None, after: str, limit: int
    ) -> list[StoredResult]:
        self.reads += 1
        if self.reads == 1:
            raise TransientError("store stored_results: the database system is shutting down")
        scores = {"red": 0.9, "blue": 0.4}
        return [
            StoredResult(
                asset_id=a,
                tenant="acme",
                uri=a,
                etag="e",
                width=1,
                height=1,
                model_version="v1",
                result=_tags_result(scores),
                stored_at=datetime(2026, 12, 1, tzinfo=UTC),
                source=(None, None, None),
                tags=(("red", 0.9, None),),
                mapping_versions=frozenset([None]),
                decisions={},
            )
            for a in ("a1", "a2")
            if a > after
        ]

    def write_tag_sets(self, function: str, new_tags: Any, before_commit: Any = None) -> set[str]:
        self.writes += 1
        if self.writes == 1:
            raise TransientError("store write_tag_sets: terminating connection")
        ids = {s.asset_id for s, _ in new_tags}
        if before_commit is not None:
            before_commit(ids)
        self.written += sorted(ids)
        return ids


def test_a_restart_of_the_store_during_a_run_is_waited_out() -> None:
    from consumers.retag.run import retag

    class Sent:
        records: list[Any] = []

        def send_all(self, records: Any) -> None:
            self.records.extend(records)

        def close(self, timeout_s: float = 10.0) -> None:
            pass

    store, producer = _FlakyStore(), Sent()
    report = retag(
        store,
        "colours",
        thresholds={"blue": 0.3},
        taxonomy=None,
        producer=producer,
        results_topic="t",
        progress=False,
    )
    assert store.written == ["a1", "a2"] and report.changed == 2
    assert [r.key for r in producer.records] == [b"a1", b"a2"]  # the failed write sent none


def _colours(url: str) -> dict[str, list[tuple[str, str | None]]]:
    """colours' stored tag rows by asset: (label, mapping version)."""
    return {a: [(r[0], r[4]) for r in rows] for a, rows in _stored_tags(url, "colours").items()}


def _expected(scores: dict[str, float], limits: dict[str, float], drop: set[str]) -> list[str]:
    return sorted(
        label
        for label, s in scores.items()
        if s >= limits.get(label, limits.get("*", OLD)) and label not in drop
    )


def test_a_tenants_mapping_is_its_own(
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """retag --tenant a changes a's tags and what the write stage applies to a's new results;
    b's stored tags and new results keep the default mapping; taxonomy show per tenant."""
    from consumers.retag.active import ActiveMappings

    scores = {"red": 0.6, "blue": 0.4, "green": 0.2, "cat": 0.8}
    tenant_of = {0: "a", 1: "a", 2: "b", 3: "b"}
    store = TagStore(store_url)
    store.upgrade()
    store.save([_asset(i, scores, tenant) for i, tenant in tenant_of.items()])
    store.close()
    ids = {t: {f"s3://lib/{i:03d}.jpg" for i, x in tenant_of.items() if x == t} for t in "ab"}
    monkeypatch.setenv("TAGFLEET_STORE", store_url)
    _no_model(monkeypatch)
    quiet = ["--results-topic", "", "--no-progress"]

    # the default for every tenant
    assert main(["retag", "colours", "--threshold", "blue=0.35", *quiet]) == 0
    default = {"blue": 0.35}
    default_version = mapping_version(None, default)
    want_default = [(t, default_version) for t in _expected(scores, default, set())]
    assert _colours(store_url) == {a: want_default for a in ids["a"] | ids["b"]}

    # tenant a's own thresholds and taxonomy: a's tags change, b's do not
    (tmp_path / "a.yaml").write_text("drop: [cat]\n")
    argv = ["retag", "colours", "--tenant", "a", "--threshold", "red=0.7"]
    assert main([*argv, "--taxonomy", str(tmp_path / "a.yaml"), *quiet]) == 0
    mine = {"blue": 0.35, "red": 0.7}  # the default's, then its own
    a_version = mapping_version(load_taxonomy(tmp_path / "a.yaml"), mine)
    want_a = [(t, a_version) for t in _expected(scores, mine, {"cat"})]
    assert want_a != want_default  # the test is not vacuous
    stored = _colours(store_url)
    assert {a: stored[a] for a in ids["a"]} == dict.fromkeys(ids["a"], want_a)
    assert {a: stored[a] for a in ids["b"]} == dict.fromkeys(ids["b"], want_default)
    store = TagStore(store_url)
    rows = store.active_mappings()
    assert set(rows) == {("colours", "*"), ("colours", "a"), ("*", "a")}
    assert rows[("colours", "*")].thresholds == default
    assert rows[("colours", "a")].thresholds == mine

    # the write stage's mapping (consumers.stages.write.Storer) on new results of each tenant
    mappings = ActiveMappings(store.active_mappings)
    mappings.refresh()
    new = [_asset(10, scores, "a"), _asset(11, scores, "b"), _asset(12, scores, "default")]
    store.save([mappings.apply(r) for r in new])
    store.close()
    stored = _colours(store_url)
    assert stored["s3://lib/010.jpg"] == want_a
    assert stored["s3://lib/011.jpg"] == want_default
    assert stored["s3://lib/012.jpg"] == want_default

    # taxonomy show: what applies to each tenant, each row naming whose it is
    capsys.readouterr()
    assert main(["taxonomy", "show", "--tenant", "a"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["*"]["tenant"] == "a" and shown["*"]["taxonomy"]["drop"] == ["cat"]
    assert shown["colours"]["tenant"] == "a" and shown["colours"]["thresholds"] == mine
    for tenant in (["--tenant", "b"], []):
        assert main(["taxonomy", "show", *tenant]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert set(shown) == {"colours"}
        assert shown["colours"]["tenant"] == "*" and shown["colours"]["thresholds"] == default

    # a new default: tenants with rows of their own keep them, are named, redrawn with them
    assert main(["retag", "colours", "--threshold", "green=0.1", *quiet]) == 0
    err = capsys.readouterr().err
    assert "tenant 'a' keeps its own thresholds and taxonomy" in err
    default2 = {"blue": 0.35, "green": 0.1}
    want_default2 = [
        (t, mapping_version(None, default2)) for t in _expected(scores, default2, set())
    ]
    stored = _colours(store_url)
    assert {a: stored[a] for a in ids["a"]} == dict.fromkeys(ids["a"], want_a)
    assert {a: stored[a] for a in ids["b"]} == dict.fromkeys(ids["b"], want_default2)

    # a's taxonomy cleared: it gets the default's (none), its thresholds stay
    assert main(["taxonomy", "clear", "--tenant", "a"]) == 0
    assert "tenant a's own taxonomy cleared" in capsys.readouterr().out
    assert main(["taxonomy", "show", "--tenant", "a"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"colours"}
    assert main(["taxonomy", "clear", "--tenant", "*"]) == 2
    assert main(["retag", "colours", "--tenant", "*", *quiet]) == 2
    assert "is the default's; leave --tenant out" in capsys.readouterr().err
