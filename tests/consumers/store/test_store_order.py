"""Order per object on SQLite and PostgreSQL: an event older than the one stored with its
asset (by its order key, consumers.sequencer) never undoes the newer one."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from store_factories import classify, make_result, table_rows

from consumers.domain import AssetResult, SourcePosition
from consumers.ports import StaleEvent
from consumers.sequencer import order_key
from consumers.store import TagStore

A = "s3://bucket/a.jpg"
AT = SourcePosition("assets", 1, 5)


def _key(n: int) -> str:
    key = order_key(f"{n:X}", versitygw=False, event_time=None)
    assert key is not None
    return key


def _result(etag: str, n: int, label: str) -> AssetResult:
    fn = {"make": {**classify(), "label": label}}
    return replace(make_result(A, fn, etag=etag), sequencer=_key(n))


def test_overwrites_in_reverse_keep_the_newer(store: TagStore) -> None:
    newer, older = _result("etag-2", 0x20, "ford"), _result("etag-1", 0x10, "honda")

    assert store.save([newer]).stale == ()
    stats = store.save([older])

    assert stats.stale == (A,) and stats.replaced_functions == 0
    assert [t.label for t in store.tags_for_asset(A)] == ["ford"]
    assert store.save([newer]).stale == ()  # the same event again is not stale


def test_a_removal_before_the_create_it_followed_wins(store: TagStore, store_url: str) -> None:
    """The removal of an asset never stored leaves a removed row with its order key; the
    create it followed, delivered after it, is stale and writes nothing."""
    assert store.remove([A], AT, uri=A, sequencer=_key(0x20)) == 0
    before = table_rows(store_url)

    stats = store.save([_result("etag-1", 0x10, "honda")])

    assert stats.stale == (A,)
    assert store.tags_for_asset(A) == [] and table_rows(store_url) == before
    assert store.removed_later([A], _key(0x10)) and not store.removed_later([A], _key(0x30))
    assert not store.removed_later([A], None)


def test_an_older_removal_is_stale_and_changes_nothing(store: TagStore, store_url: str) -> None:
    store.save([_result("etag-2", 0x20, "ford")])
    before = table_rows(store_url)

    with pytest.raises(StaleEvent):
        store.remove([A], AT, uri=A, sequencer=_key(0x10))

    assert table_rows(store_url) == before
    assert store.remove([A], AT, uri=A, sequencer=_key(0x30)) == 1
    assert store.tags_for_asset(A) == []
    # a create after that removal tags the object again
    assert store.save([_result("etag-3", 0x40, "kia")]).stale == ()
    assert [t.label for t in store.tags_for_asset(A)] == ["kia"]


def test_unordered_events_apply_and_keep_the_stored_key(store: TagStore) -> None:
    store.save([_result("etag-2", 0x20, "ford")])
    unordered = make_result(A, {"make": {**classify(), "label": "kia"}}, etag="etag-9")

    assert store.save([unordered]).stale == ()
    assert [t.label for t in store.tags_for_asset(A)] == ["kia"]
    assert store.save([_result("etag-1", 0x10, "honda")]).stale == (A,)


def test_in_one_batch_the_newer_event_counts(store: TagStore) -> None:
    stats = store.save([_result("etag-2", 0x20, "ford"), _result("etag-1", 0x10, "honda")])

    assert stats.stale == ()
    assert [t.label for t in store.tags_for_asset(A)] == ["ford"]


def _save_together(pairs: list[tuple[TagStore, AssetResult]]) -> list[BaseException]:
    """Save each result with its store on its own thread, all released at once."""
    start = threading.Barrier(len(pairs))
    errors: list[BaseException] = []

    def save(writer: TagStore, result: AssetResult) -> None:
        start.wait()
        try:
            writer.save([result])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=save, args=pair) for pair in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_two_writers_of_a_new_asset_keep_the_newer(store: TagStore, store_url: str) -> None:
    """Two consumers save the two overwrites of an object never stored at the same time, in
    either order of arrival: the newer one's tags stay."""
    for attempt in range(6):
        asset = f"s3://bucket/race-{attempt}.jpg"
        newer = replace(_result("etag-2", 0x20, "ford"), asset_id=asset, uri=asset)
        older = replace(_result("etag-1", 0x10, "honda"), asset_id=asset, uri=asset)
        stores = [TagStore(store_url), TagStore(store_url)]
        pairs = [(stores[0], newer), (stores[1], older)]

        assert _save_together(pairs if attempt % 2 else pairs[::-1]) == []

        assert [t.label for t in stores[0].tags_for_asset(asset)] == ["ford"]
        for s in stores:
            s.close()


def test_an_ordered_removal_of_another_objects_asset_is_not_stale(store: TagStore) -> None:
    """A removal names an object: an asset whose id looks like that object's URI but whose
    object lives elsewhere is left alone, and that is not an older event."""
    store.save([replace(_result("etag-2", 0x20, "ford"), uri="s3://other-bucket/x.jpg")])

    assert store.remove([A], AT, uri=A, sequencer=_key(0x30)) == 0
    assert [t.label for t in store.tags_for_asset(A)] == ["ford"]
