from consumers.domain import AssetRemoval, AssetRequest, SourcePosition
from consumers.work import KeyGate, LaneQueue, Message, WorkItem


def _item(asset: str, offset: int, removal: bool = False) -> WorkItem:
    msg = Message(SourcePosition("t", 0, offset), None, None)
    if removal:
        return WorkItem(msg, AssetRemoval(asset_id=asset, uri=asset))
    return WorkItem(msg, AssetRequest(asset_id=asset, uri=asset, bucket="b", key="k"))


def test_gate_runs_items_of_one_asset_in_offset_order():
    gate = KeyGate()
    create, remove, again = _item("a", 1), _item("a", 2, removal=True), _item("a", 3)
    other = _item("b", 4)
    assert gate.admit(create) is create
    assert gate.admit(remove) is None
    assert gate.admit(again) is None
    assert gate.admit(other) is other
    assert gate.release(create) is remove
    assert gate.release(remove) is again
    assert gate.release(again) is None
    assert gate.release(other) is None
    assert len(gate) == 0


def test_gate_forgets_assets_once_drained():
    gate = KeyGate()
    first = _item("a", 1)
    gate.admit(first)
    gate.release(first)
    second = _item("a", 2)
    assert gate.admit(second) is second


def test_gate_tells_a_create_whose_object_is_gone_that_its_removal_waits_behind_it() -> None:
    """A create whose object is gone may be waiting for the Delete that followed it; when that
    Delete was polled after it, it waits in the gate behind the create and could never be
    applied first: the gate says so (newer removals only, ordered creates only)."""
    gate = KeyGate()
    create = WorkItem(
        Message(SourcePosition("t", 0, 1), None, None),
        AssetRequest(asset_id="a", uri="a", bucket="b", key="k", sequencer="10"),
    )
    gate.admit(create)
    assert not gate.removal_waits("a", "10")
    older = WorkItem(
        Message(SourcePosition("t", 1, 1), None, None),
        AssetRemoval(asset_id="a", uri="a", sequencer="05"),
    )
    gate.admit(older)
    assert not gate.removal_waits("a", "10")
    newer = WorkItem(
        Message(SourcePosition("t", 1, 2), None, None),
        AssetRemoval(asset_id="a", uri="a", sequencer="20"),
    )
    gate.admit(newer)
    assert gate.removal_waits("a", "10")
    assert not gate.removal_waits("a", None) and not gate.removal_waits("other", "10")


def test_the_lane_queue_hands_out_uploads_before_backfill_in_order_within_a_lane():
    ready = LaneQueue(maxsize=4)
    items = [
        WorkItem(Message(None, None, None, backfill=backfill), None)
        for backfill in (True, True, False, True)
    ]
    for item in items:
        ready.put_nowait(item)
    assert ready.full()
    assert [ready.get_nowait() for _ in range(4)] == [items[2], items[0], items[1], items[3]]
    assert ready.empty()
