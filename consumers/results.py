"""Pure builders of the output payloads: result events and dead-letter headers."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from consumers.domain import (
    AssetRemoval,
    AssetRequest,
    AssetResult,
    PermanentError,
    Reason,
    SourcePosition,
)

_UNAVAILABLE = frozenset({Reason.OBJECT_NOT_FOUND, Reason.ACCESS_DENIED})


def public_error(error: PermanentError, reveal_missing: bool) -> PermanentError:
    """What the dead-letter topic may say of ``error``: a missing and a forbidden object are
    both ``object_unavailable`` unless ``reveal_missing``, so a sender who reads the DLQ
    cannot probe which objects exist (the service's own log keeps the precise cause)."""
    if reveal_missing or error.reason not in _UNAVAILABLE:
        return error
    return PermanentError(
        Reason.OBJECT_UNAVAILABLE, "the object does not exist or the service may not read it"
    )


def rfc3339(moment: datetime) -> str:
    """``moment`` as RFC 3339 with a ``Z`` suffix for UTC."""
    return moment.isoformat().replace("+00:00", "Z")


def build_result(
    request: AssetRequest,
    decoded: Any,
    functions: dict[str, dict[str, Any]],
    source: SourcePosition | None,
    processed_at: datetime,
    latency_ms: float | None = None,
) -> AssetResult:
    """The stored and published result of one image (``decoded`` carries its oriented size)."""
    return AssetResult(
        asset_id=request.asset_id,
        uri=request.uri,
        etag=request.etag,
        width=decoded.width,
        height=decoded.height,
        functions=functions,
        source=source,
        processed_at=processed_at,
        latency_ms=latency_ms,
        attributes=request.attributes,
        sequencer=request.sequencer,
        tenant=request.tenant,
    )


def result_event(result: AssetResult) -> dict[str, Any]:
    """The result-event object of DESIGN.md for one tagged asset."""
    event: dict[str, Any] = {
        "asset_id": result.asset_id,
        "uri": result.uri,
        "etag": result.etag,
        "width": result.width,
        "height": result.height,
        "functions": result.functions,
        "processed_at": rfc3339(result.processed_at),
        "latency_ms": None if result.latency_ms is None else round(result.latency_ms, 1),
    }
    if result.attributes:
        event["attributes"] = result.attributes
    if result.tenant:
        event["tenant"] = result.tenant  # webhooks filter by it (docs/webhooks.md)
    return event


def removal_event(removal: AssetRemoval, processed_at: datetime) -> dict[str, Any]:
    """The result event of an ``ObjectRemoved`` notification."""
    return {
        "asset_id": removal.asset_id,
        "uri": removal.uri,
        "removed": True,
        "processed_at": rfc3339(processed_at),
    }


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def dlq_headers(
    reason: Reason, message: str, source: SourcePosition, asset_id: str | None = None
) -> list[tuple[str, bytes]]:
    """The dead-letter headers of DESIGN.md (UTF-8 strings), plus the asset id when known."""
    headers = [
        ("tagfleet-reason", reason.value),
        ("tagfleet-message", message[:2000]),
        ("tagfleet-source-topic", source.topic),
        ("tagfleet-source-partition", str(source.partition)),
        ("tagfleet-source-offset", str(source.offset)),
    ]
    if asset_id:
        headers.append(("tagfleet-asset-id", asset_id))
    return [(k, v.encode()) for k, v in headers]


def aggregate_failures(
    failures: Sequence[tuple[str | None, PermanentError]], records: int
) -> PermanentError:
    """The one dead letter of a message several of whose ``records`` failed.

    Its reason is the failures' common reason, or ``multiple``; ``tagfleet-message`` counts
    them per reason and names the first few; the header ``tagfleet-failed-records`` lists
    every failed asset id with its reason as JSON (bounded by the records-per-message cap).
    """
    reasons = Counter(error.reason for _, error in failures)
    reason = next(iter(reasons)) if len(reasons) == 1 else Reason.MULTIPLE
    counts = ", ".join(f"{r.value} x{n}" for r, n in reasons.most_common())
    first = "; ".join(f"{asset}: {error.message}" for asset, error in failures[:3])
    listing = [{"asset_id": asset, "reason": error.reason.value} for asset, error in failures]
    return PermanentError(
        reason,
        f"{len(failures)} of {records} records failed ({counts}); {first}",
        [("tagfleet-failed-records", json.dumps(listing, ensure_ascii=False).encode())],
    )
