"""The interfaces where the pipeline meets its adapters: the event source, the fleet, the
store and the producer.

The errors an adapter raises for the pipeline to act on (``RecordRejected``,
``StoreUnusable``) are declared here too, with the protocols that raise them. The pipeline
and its stages are typed with these protocols only; the Kafka, S3, database and
model types stay in their adapters (``consumers/source.py``, ``consumers/sinks.py``,
``consumers/store/``, ``models/``). Test fakes declare the protocols they stand in for, so a
fake that drifts from the real adapter fails type checking.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from consumers.domain import AssetResult, SourcePosition


class Partition(NamedTuple):
    """A topic partition. Equal to (and hashed like) kafka-python's ``TopicPartition``, which
    is the same named pair, so the adapter can hand either to the loop."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class RebalanceEvent:
    """Partitions taken from (``revoked``), given to (``assigned``) or lost by (``lost``: the
    member was dropped from the group, so nothing of them may be committed and, should they
    come back, they restart from the last commit) this member."""

    kind: str  # "assigned" | "revoked" | "lost"
    partitions: frozenset[Partition]


class PolledRecord(Protocol):
    """What the loop reads of a polled record."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int | None: ...


class Source(Protocol):
    """A group member's view of the input topic. Called from one thread (the loop).

    ``end_offsets`` and ``committed_offsets`` feed the stall detector: lag is their difference
    for every assigned partition, whether or not a poll ever returned it."""

    @property
    def joined(self) -> bool: ...
    def poll(self, timeout_ms: int) -> Sequence[PolledRecord]: ...
    def take_rebalance_events(self) -> list[RebalanceEvent]: ...
    def assignment(self) -> set[Partition]: ...
    def set_paused(self, paused: bool) -> int: ...
    def pause_topics(self, topics: Collection[str]) -> int:
        """Pause every assigned partition of ``topics`` and resume every other one (the
        priority lanes pause the backfill topic alone); idempotent, and partitions of those
        topics assigned later start paused. Returns the number paused."""
        ...

    def rewind(self, records: Sequence[PolledRecord]) -> int: ...
    def commit(self, offsets: Mapping[Partition, int]) -> bool: ...
    def member_lost(self) -> bool:
        """Whether the broker no longer lists this member, as far as is known; never blocks."""
        ...

    def end_offsets(self) -> dict[Partition, int]:
        """End offsets of the assigned partitions, as last known; never blocks: the broker is
        asked off the caller's thread (a call may start the next question, answered for a
        later call). The loop does not call it mid-rebalance."""
        ...

    def committed_offsets(self) -> dict[Partition, int]:
        """Where the group resumes each assigned partition, from the answer that brought the
        end offsets: its committed offset, else where ``auto_offset_reset`` starts it (so
        end minus this is the lag from the assignment on, fetched or not). Never blocks and
        asks nothing."""
        ...

    def close(self) -> None: ...


class Fleet(Protocol):
    """The models: one call predicts every requested function for a batch of images.

    ``tiles``: per image the tile sets the decoder cut (``DecodedImage.tiles``, one
    ``models.tile_grid.TileSet`` per tiling of the fleet's tiled functions); given only when
    some image has any, so a fleet without tiled functions is called as before."""

    @property
    def functions(self) -> Mapping[str, Any]: ...
    @property
    def input_size(self) -> int: ...
    def predict(
        self,
        images: Sequence[Any],
        sizes: Sequence[tuple[int, int]],
        functions: Sequence[Sequence[str] | None] | None,
        tiles: Sequence[Sequence[Any]] | None = None,
    ) -> list[dict[str, dict[str, Any]]]: ...


class StoreUnusable(RuntimeError):
    """The store refuses every write for a reason no item causes (a revoked grant, a
    read-only database, a missing schema): the service stops rather than dead-letter what
    it cannot store."""


class StaleEvent(Exception):
    """The store holds a newer event of the object than the one it was asked to apply
    (docs/events.md, "Order per object"): the event is acknowledged as stale, not applied."""


class Store(Protocol):
    """The metadata store: idempotent writes; ``TransientError`` for faults that may pass."""

    def save(self, results: Sequence[AssetResult]) -> Any: ...
    def remove(
        self,
        asset_ids: Sequence[str],
        source: SourcePosition | None,
        *,
        uri: str | None = None,
        sequencer: str | None = None,
    ) -> int: ...
    def removed_later(self, asset_ids: Sequence[str], sequencer: str | None) -> bool: ...
    def ping(self) -> None: ...
    def verify_schema(self) -> None: ...


class EmbeddingSink(Protocol):
    """Where each tagged image's pooled embeddings go (``models.embedding_store`` behind
    ``consumers.embeddings``): idempotent like the store, ``TransientError`` for faults that
    may pass."""

    def write(self, results: Sequence[AssetResult]) -> int:
        """Store the embeddings of ``results`` (those of a reused result: copied from the
        asset it was reused from); returns rows written (0 on a replay)."""
        ...

    def remove(self, asset_ids: Sequence[str]) -> int:
        """Drop the embeddings of removed assets; returns rows removed."""
        ...


class StoredReuse(Protocol):
    """Content-hash dedup: results already stored for the same bytes."""

    def __call__(self, content_hashes: Sequence[str]) -> Mapping[str, Any]:
        """Per content hash found: an object with ``asset_id`` and ``functions`` (function
        name -> result object, ``version`` included); the caller checks the versions."""
        ...


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


class RecordRejected(Exception):
    """The broker or the client refused records for what they are (too large, invalid).

    ``refused`` holds the positions, in the list given to ``send_all``, of the refused
    records; every other record of that call was acknowledged.
    """

    def __init__(self, message: str, refused: Sequence[int]) -> None:
        super().__init__(message)
        self.refused = tuple(refused)


class RecordProducer(Protocol):
    """Sends records and waits for their acknowledgements (``TransientError`` when it could
    not, ``RecordRejected`` when a record is refused for what it is)."""

    def send_all(self, records: Sequence[OutRecord]) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...
