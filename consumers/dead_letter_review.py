"""Dead letters read back: what ``tagfleet dlq list`` shows and what ``dlq redrive`` may send.

Pure functions over the records of the dead-letter topic and of its redrive ledger; the
Kafka side is :mod:`consumers.dlq`.

A redrive sends a dead letter's original key and value back onto the topic it came from, with
``tagfleet-redrive-of`` (the dead letter's ``topic:partition:offset``) and
``tagfleet-redrives`` (how many times this event has now been redriven) headers, and records
it in the ledger topic (``<dlq>.redrives``, compacted, keyed by the dead letter). A dead
letter already in the ledger, or one whose source record was itself a redrive (the event
failed again after its cause was "fixed"), is refused unless forced: redriving in a loop is
how a poison event goes round for ever.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

REDRIVE_OF = "tagfleet-redrive-of"
REDRIVES = "tagfleet-redrives"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, with its ``tagfleet-*`` headers read."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.headers.get("tagfleet-reason", "unknown")

    @property
    def message(self) -> str:
        return self.headers.get("tagfleet-message", "")

    @property
    def asset_id(self) -> str | None:
        return self.headers.get("tagfleet-asset-id")

    @property
    def source_topic(self) -> str | None:
        return self.headers.get("tagfleet-source-topic")

    @property
    def source(self) -> str | None:
        """``topic:partition:offset`` of the input record that was dead-lettered."""
        parts = [self.headers.get(f"tagfleet-source-{n}") for n in ("topic", "partition", "offset")]
        return ":".join(p for p in parts if p is not None) if all(parts) else None

    @property
    def value_dropped(self) -> bool:
        """The value was too large to keep (``tagfleet-value-dropped``): nothing to redrive."""
        return self.value is None or "tagfleet-value-dropped" in self.headers


def dead_letter(record: Any) -> DeadLetter:
    """A :class:`DeadLetter` from a kafka-python ``ConsumerRecord`` (headers decoded as UTF-8,
    undecodable bytes replaced)."""
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (record.headers or [])}
    return DeadLetter(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        headers,
    )


@dataclass
class ReasonSummary:
    reason: str
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    samples: list[DeadLetter] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "count": self.count,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "samples": [
                {"at": s.where, "asset_id": s.asset_id, "message": s.message, "source": s.source}
                for s in self.samples
            ],
        }


def summarise(letters: Iterable[DeadLetter], samples: int) -> list[ReasonSummary]:
    """Per reason: the count, the first and last time, the first ``samples`` letters; the
    most frequent reason first."""
    by_reason: dict[str, ReasonSummary] = {}
    for letter in letters:
        entry = by_reason.setdefault(letter.reason, ReasonSummary(letter.reason))
        entry.count += 1
        entry.first_ms = min(entry.first_ms or letter.timestamp_ms, letter.timestamp_ms)
        entry.last_ms = max(entry.last_ms or letter.timestamp_ms, letter.timestamp_ms)
        if len(entry.samples) < samples:
            entry.samples.append(letter)
    return sorted(by_reason.values(), key=lambda e: (-e.count, e.reason))


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One redrive: the dead letter, where its event went, how many redrives it has had."""

    dead_letter: str
    sent_to: str
    redrives: int

    def encode(self) -> bytes:
        return json.dumps(
            {"dead_letter": self.dead_letter, "sent_to": self.sent_to, "redrives": self.redrives}
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> LedgerEntry:
        data = json.loads(value)
        return cls(str(data["dead_letter"]), str(data["sent_to"]), int(data["redrives"]))


@dataclass(frozen=True, slots=True)
class Redrive:
    letter: DeadLetter
    topic: str
    redrives: int  # this event's redrives once this one is sent


@dataclass
class RedrivePlan:
    send: list[Redrive] = field(default_factory=list)
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)


def plan_redrive(
    letters: Sequence[DeadLetter],
    ledger: Iterable[LedgerEntry],
    reason: str,
    since_ms: int | None = None,
    force: bool = False,
    default_topic: str | None = None,
) -> RedrivePlan:
    """Which dead letters of ``reason`` (written at or after ``since_ms``) go back, and why
    the others may not."""
    entries = list(ledger)
    redriven = {e.dead_letter: e for e in entries}
    sent = {e.sent_to: e for e in entries}
    plan = RedrivePlan()
    planned: dict[str, str] = {}  # source record -> the dead letter planned for it
    for letter in letters:
        if letter.reason != reason or (since_ms is not None and letter.timestamp_ms < since_ms):
            continue
        topic = letter.source_topic or default_topic
        before = 0
        if letter.value_dropped:
            plan.refused.append((letter, "its value was too large to keep: publish it again"))
            continue
        if topic is None:
            plan.refused.append((letter, "no tagfleet-source-topic header: not a tagfleet DLQ"))
            continue
        if letter.where in redriven:
            before = redriven[letter.where].redrives
            why = f"already redriven (to {redriven[letter.where].sent_to})"
        elif letter.source in sent:
            before = sent[letter.source].redrives
            why = f"the event failed again after redrive number {before}"
        else:
            why = ""
        if why and not force:
            plan.refused.append((letter, why + "; --force sends it once more"))
            continue
        if letter.source is not None and letter.source in planned:
            # the same input record dead-lettered twice (a crash between the dead letter and
            # the commit): its event goes back once
            plan.refused.append((letter, f"same event as {planned[letter.source]}, sent once"))
            continue
        if letter.source is not None:
            planned[letter.source] = letter.where
        plan.send.append(Redrive(letter, topic, before + 1))
    return plan


def redrive_headers(redrive: Redrive) -> list[tuple[str, bytes]]:
    return [
        (REDRIVE_OF, redrive.letter.where.encode()),
        (REDRIVES, str(redrive.redrives).encode()),
    ]


def reasons_table(summaries: Sequence[ReasonSummary]) -> str:
    """The plain-text listing of ``dlq list``."""
    if not summaries:
        return "no dead letters"
    total = sum(s.count for s in summaries)
    width = max(len(s.reason) for s in summaries)
    lines = [f"{'reason':<{width}}  {'count':>7}", f"{'-' * width}  {'-' * 7}"]
    for s in summaries:
        lines.append(f"{s.reason:<{width}}  {s.count:>7}")
        for sample in s.samples:
            asset = sample.asset_id or (sample.key or b"").decode("utf-8", "replace") or "-"
            lines.append(f"{'':<{width}}    {sample.where}  {asset}: {sample.message[:120]}")
    lines.append(f"{'total':<{width}}  {total:>7}")
    return "\n".join(lines)


def counts(letters: Iterable[DeadLetter]) -> Counter[str]:
    return Counter(letter.reason for letter in letters)
