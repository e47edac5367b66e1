"""The options of ``tagfleet api`` and ``tagfleet api-key create|revoke``.

Each command reads its own ``TAGFLEET_<COMMAND>_<NAME>`` variables; the store is the shared
:class:`~consumers.settings.StoreSettings` (``TAGFLEET_STORE``).
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.safe_text import MAX_SHORT_BYTES, text_problem
from models.options import CommaList

SCOPES = ("read", "label", "admin")


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, frozen=True, extra="ignore")


class ApiOptions(BaseSettings):
    """``tagfleet api``."""

    model_config = _config("TAGFLEET_API_")

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on (0: any free port)")
    max_page_size: int = Field(
        200, ge=1, le=10_000, description="largest page a search may ask for (limit)"
    )


class ApiKeyCreateOptions(BaseSettings):
    """``tagfleet api-key create``."""

    model_config = _config("TAGFLEET_API_KEY_")

    tenant: str = Field(
        "default",
        description="tenant whose assets the key reads and labels (events without a tenant"
        " belong to 'default')",
    )
    scopes: CommaList = Field(
        ("read",),
        description="comma-separated scopes: read (GET), label (also answers reviews and sets"
        " labels), admin (everything)",
    )
    name: str = Field("", description="who or what holds the key (shown as a label's author)")

    @field_validator("scopes", mode="after")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        wrong = [s for s in value if s not in SCOPES]
        if wrong or not value:
            raise ValueError(f"scopes are {', '.join(SCOPES)}; not {', '.join(wrong) or 'none'}")
        return value

    @field_validator("tenant", "name", mode="after")
    @classmethod
    def _text(cls, value: str) -> str:
        problem = text_problem(value, MAX_SHORT_BYTES)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("tenant", mode="after")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        if not value:
            raise ValueError("the tenant is empty")
        return value


class DatasetExportOptions(BaseSettings):
    """``tagfleet dataset export``."""

    model_config = _config("TAGFLEET_DATASET_")

    out: str = Field(description="folder to write manifest.jsonl and summary.json into")
    tenant: str = Field("default", description="whose labels to export")
    include_ai: bool = Field(
        False,
        description="also the assets nobody labelled, with their AI tags scored >= min_score"
        " (never a label a person rejected)",
    )
    min_score: float = Field(0.9, ge=0, le=1, description="AI tags kept with include_ai")
    min_samples: int = Field(
        5, ge=1, description="labels with fewer samples are named in a warning"
    )
