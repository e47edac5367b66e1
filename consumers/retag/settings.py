"""The options of ``tagfleet retag`` (``TAGFLEET_RETAG_<NAME>``); the store and Kafka are the
shared :class:`~consumers.settings.StoreSettings` and :class:`~consumers.settings.KafkaSettings`.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetagOptions(BaseSettings):
    """``tagfleet retag``."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_RETAG_", frozen=True, extra="ignore")

    thresholds: str | None = Field(
        None,
        description="YAML or JSON file of label -> threshold (0..1; '*' for every other label);"
        " --threshold flags win over it",
    )
    target_precision: float | None = Field(
        None,
        gt=0,
        le=1,
        description="choose each label's threshold as the lowest score reaching this precision"
        " on people's labels in the store (labels with fewer than min_labels present and"
        " absent decisions keep theirs, and are named)",
    )
    min_labels: int = Field(
        5, ge=1, description="target_precision: present and absent decisions a label needs, each"
    )
    taxonomy: str | None = Field(
        None,
        description="taxonomy file (terms, synonyms, parents, drop; docs/library.md); made the"
        " active one. Unset: the active taxonomy (tagfleet taxonomy set), if any",
    )
    replace_thresholds: bool = Field(
        False,
        description="start from the model's thresholds instead of the function's active ones"
        " (an earlier retag's)",
    )
    tenant: str | None = Field(
        None,
        description="redraw only this tenant's assets and make the mapping its own, over the"
        " default (unset: the default of every tenant; tenants with their own keep it)",
    )
    dry_run: bool = Field(
        False, description="report what would change; write, activate and publish nothing"
    )
    batch_size: int = Field(
        2000, ge=1, le=100_000, description="results read, compared and written per transaction"
    )
    results_topic: str = Field(
        "asset-tags",
        description="topic of the result events of assets whose effective tags changed"
        " ('' publishes none)",
    )
    progress: bool = Field(True, description="a progress bar on stderr")
