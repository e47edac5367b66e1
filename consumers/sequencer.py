"""The order of events of one object: a notification record's ``sequencer`` made comparable.

Pure: no I/O. Events of one object can arrive out of order (notifications have an empty
Kafka key, so they spread over partitions); the store keeps the newest event's order key with
the asset and ignores an older event (docs/events.md, "Order per object"). An order key is a
string of :data:`WIDTH` upper-case hex digits, so two keys compare as strings (in Python and
in SQL) in the order of the events they come from:

- AWS and MinIO: the record's ``sequencer``, right-padded with zeros, as the Amazon S3 User
  Guide says today ("first right pad the shorter value with zeros, and then do a
  lexicographical comparison"; older copies of the page said left). MinIO writes the object's
  modification time in hex nanoseconds, always 16 digits, so both paddings agree for it.
- VersityGW: its ``sequencer`` is a per-process counter in hex without padding (``9``, ``A``,
  ``10``) that restarts at ``1`` with the gateway, so right-padding would put ``10`` before
  ``9`` and a restart would make every later event look older. Its key is the record's
  ``eventTime`` in whole seconds, then the counter left-padded (as a number): events after a
  restart fall in a later second than those before it (but for a restart within one second),
  and within one run the counter orders events of the same second.

A sequencer that is missing, not hex, or too long gives no key: such an event is applied
unordered, as a native event always is.
"""

from __future__ import annotations

import re
from datetime import datetime

WIDTH = 64
_HEX = re.compile(r"[0-9A-Fa-f]{1,64}")
_GW_COUNTER = 16  # hex digits of the VersityGW counter (a uint64)
_GW_SECONDS = 16


def order_key(sequencer: str | None, *, versitygw: bool, event_time: datetime | None) -> str | None:
    """The comparable order key of a notification record, or None when it has none."""
    if sequencer is None or not _HEX.fullmatch(sequencer):
        return None
    digits = sequencer.upper()
    if not versitygw:
        return digits.ljust(WIDTH, "0")
    if event_time is None or len(digits.lstrip("0")) > _GW_COUNTER:
        return None
    seconds = int(event_time.timestamp())
    if seconds < 0:
        return None
    stamp = f"{seconds:0{_GW_SECONDS}X}{int(digits, 16):0{_GW_COUNTER}X}"
    return stamp.ljust(WIDTH, "0")


def is_older(incoming: str | None, stored: str | None) -> bool:
    """Whether an event with order key ``incoming`` happened before the one that left
    ``stored``: False when either has no key (unordered events apply), and for equal keys (the
    same event again applies, idempotently)."""
    return incoming is not None and stored is not None and incoming < stored
