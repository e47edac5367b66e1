"""Where the library's stored embeddings are: the one setting of the commands that read them.

``tagfleet train --from-embeddings``, ``apply --from-embeddings``, ``similar``, ``search``
and the API's search routes read the embedding store at ``--embeddings``
(``TAGFLEET_EMBEDDINGS``): a local folder or an ``s3://`` prefix, the location the consumer
writes each image's pooled embedding to (:mod:`models.embedding_store`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.settings import ENV_PREFIX


class EmbeddingStoreSettings(BaseSettings):
    """The embedding store a command reads."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    embeddings: str | None = Field(
        None,
        description="The embedding store: a local folder or an s3:// prefix holding each"
        " asset's pooled image embedding per backbone (what the consumer stores).",
    )

    def location(self, command: str) -> str:
        """The location; a ``SystemExit`` naming the flag when none is set."""
        if not self.embeddings:
            raise SystemExit(
                f"tagfleet {command}: give the embedding store (--embeddings or"
                " TAGFLEET_EMBEDDINGS)"
            )
        return self.embeddings
