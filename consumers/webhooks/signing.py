"""The signature header: ``Tagfleet-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]``, each
``v1`` the HMAC-SHA256 of ``"<t>." + body`` under one of the endpoint's secrets (two during a
rotation). A receiver accepts the request when one ``v1`` matches its secret and ``t`` is
recent (docs/webhooks.md)."""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Tagfleet-Signature"


def sign(body: bytes, secrets: list[str], timestamp: int) -> str:
    parts = [f"t={timestamp}"]
    for secret in secrets:
        mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        parts.append(f"v1={mac.hexdigest()}")
    return ",".join(parts)


def verify(body: bytes, header: str, secret: str, now: int, tolerance_s: int = 300) -> bool:
    fields = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in fields if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance_s:
        return False
    mac = hmac.new(secret.encode(), f"{stamps[0]}.".encode() + body, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, mac) for k, v in fields)
