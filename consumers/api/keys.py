"""API keys: created and revoked by ``tagfleet api-key``, checked on every request.

A key is ``tfk_<key_id>_<secret>``: ``key_id`` (12 hex digits) is its public name, the secret
32 random bytes. The store keeps only SHA-256 of the secret: the secret is random, so a slow
password hash would add nothing but latency to every request. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from consumers.store.errors import translate_errors
from consumers.store.models import api_keys

_TOKEN = re.compile(r"tfk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
# admin may do everything, label may read too
_IMPLIED = {"admin": {"admin", "label", "read"}, "label": {"label", "read"}, "read": {"read"}}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An authenticated caller: the key's id, name, tenant and every scope it holds."""

    key_id: str
    name: str
    tenant: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(engine: sa.Engine, tenant: str, scopes: tuple[str, ...], name: str) -> str:
    """Store a new key and return its token (shown once, never stored)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = {
        "key_id": key_id,
        "secret_hash": _hash(secret),
        "tenant": tenant,
        "scopes": " ".join(sorted(set(scopes))),
        "name": name or key_id,
        "created_at": datetime.now(UTC),
        "revoked_at": None,
    }
    with translate_errors("create_key"), engine.begin() as conn:
        conn.execute(sa.insert(api_keys), [row])
    return f"tfk_{key_id}_{secret}"


def revoke_key(engine: sa.Engine, key_id: str) -> bool:
    """Revoke a key by id (or by its whole token); False when no such live key exists."""
    found = _TOKEN.fullmatch(key_id)
    key_id = found.group(1) if found else key_id
    with translate_errors("revoke_key"), engine.begin() as conn:
        done = conn.execute(
            sa.update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        return bool(done.rowcount)


def authenticate(engine: sa.Engine, token: str) -> ApiKey | None:
    """The live key ``token`` names, or None (malformed, unknown, wrong secret, revoked)."""
    found = _TOKEN.fullmatch(token)
    if not found:
        return None
    key_id, secret = found.groups()
    k = api_keys.c
    query = sa.select(k.secret_hash, k.tenant, k.scopes, k.name).where(
        k.key_id == key_id, k.revoked_at.is_(None)
    )
    with translate_errors("authenticate"), engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    scopes: set[str] = set()
    for scope in row.scopes.split():
        scopes |= _IMPLIED.get(scope, set())
    return ApiKey(key_id=key_id, name=row.name, tenant=row.tenant, scopes=frozenset(scopes))
