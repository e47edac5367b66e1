"""The registered endpoints: a JSON file (``--webhooks``, default ``webhooks.json``, written
0600: it holds the secrets), edited by ``tagfleet webhook add|list|remove|rotate`` and read
by ``tagfleet webhook serve`` at start."""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

EVENTS = ("tags", "removed")


class Endpoint(BaseModel):
    id: str
    url: str
    events: list[str] = Field(default_factory=lambda: list(EVENTS))
    tenant: str | None = None
    secrets: list[str]  # the newest first; two during a rotation, both sign
    created_at: str

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a webhook URL is http:// or https://")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        wrong = [e for e in value if e not in EVENTS]
        if wrong or not value:
            raise ValueError(f"events are {', '.join(EVENTS)}; not {', '.join(wrong) or 'none'}")
        return value

    def public(self) -> dict[str, Any]:
        return self.model_dump(exclude={"secrets"}) | {"secrets": len(self.secrets)}


def load(path: Path) -> list[Endpoint]:
    if not path.exists():
        return []
    return [Endpoint.model_validate(e) for e in json.loads(path.read_text())["endpoints"]]


def save(path: Path, endpoints: list[Endpoint]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"endpoints": [e.model_dump() for e in endpoints]}, f, indent=2)
    tmp.replace(path)


def add(path: Path, url: str, events: list[str], tenant: str | None) -> Endpoint:
    endpoint = Endpoint(
        id=secrets.token_hex(4),
        url=url,
        events=events,
        tenant=tenant,
        secrets=[secrets.token_urlsafe(32)],
        created_at=datetime.now(UTC).isoformat(),
    )
    save(path, [*load(path), endpoint])
    return endpoint


def remove(path: Path, endpoint_id: str) -> bool:
    endpoints = load(path)
    kept = [e for e in endpoints if e.id != endpoint_id]
    save(path, kept)
    return len(kept) != len(endpoints)


def rotate(path: Path, endpoint_id: str, finish: bool) -> Endpoint | None:
    """A new secret that signs beside the old one (``finish``: drop the old one)."""
    endpoints = load(path)
    for e in endpoints:
        if e.id == endpoint_id:
            e.secrets = e.secrets[:1] if finish else [secrets.token_urlsafe(32), e.secrets[0]]
            save(path, endpoints)
            return e
    return None
