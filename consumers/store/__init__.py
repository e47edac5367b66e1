"""The metadata store: tags and results of assets in PostgreSQL or SQLite (docs/store.md)."""

from consumers.store.errors import is_transient
from consumers.store.migrate import current, upgrade
from consumers.store.repository import TagStore
from consumers.store.rows import SaveStats, TagRow

__all__ = ["SaveStats", "TagRow", "TagStore", "current", "is_transient", "upgrade"]
