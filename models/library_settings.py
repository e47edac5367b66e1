"""Where the library's stored embeddings are, for the commands that read them.

``tagfleet train --from-embeddings``, ``apply --from-embeddings``, ``similar``, ``search``
and the API's search routes read the embedding store at ``--embeddings``
(``TAGFLEET_EMBEDDINGS``, the variable the service writes by): a local folder or an ``s3://``
prefix (:mod:`models.embedding_store`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.s3uri import is_s3
from models.settings import ENV_PREFIX

DEFAULT_LOCATION = "tagfleet-embeddings"  # the service's default too


class EmbeddingStoreSettings(BaseSettings):
    """The embedding store a command reads."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    embeddings: str = Field(
        DEFAULT_LOCATION,
        description="The embedding store: a local folder or an s3:// prefix where each"
        " image's pooled embedding per backbone is kept (the service writes it; train, apply,"
        " similar, search and the API read it).",
    )

    def location(self, command: str) -> str:
        """The location; a ``SystemExit`` naming the flag when a local one does not exist (a
        reader must not create an empty store and then find nothing in it)."""
        if not is_s3(self.embeddings) and not Path(self.embeddings).is_dir():
            raise SystemExit(
                f"tagfleet {command}: no embedding store at {self.embeddings}: give the one the"
                " service writes (--embeddings or TAGFLEET_EMBEDDINGS)"
            )
        return self.embeddings
