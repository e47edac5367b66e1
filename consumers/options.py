"""The options of the commands other than the service, one settings model per command.

Each reads ``TAGFLEET_<COMMAND>_<NAME>``: a ``tag`` batch size is not the service's
``TAGFLEET_BATCH_SIZE``. What the commands share with the service (the Kafka cluster, the
store, the fleet file, the runtime, the image limits) comes from the shared models of
:mod:`consumers.settings` and :mod:`models.settings`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AwareDatetime, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.domain import Reason
from models.manifest import NAME_PATTERN
from models.options import CommaList

# The names fleet.yaml and the manifests accept (models.manifest.NAME_PATTERN).
FUNCTION_NAME = re.compile(NAME_PATTERN)


def function_names(value: tuple[str, ...]) -> tuple[str, ...]:
    """``value`` when every item is a function name (models.manifest.NAME_PATTERN)."""
    wrong = [name for name in value if not FUNCTION_NAME.fullmatch(name)]
    if wrong:
        raise ValueError(f"not function names: {', '.join(wrong)}")
    return value


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, frozen=True, extra="ignore")


class TagOptions(BaseSettings):
    """``tagfleet tag``."""

    model_config = _config("TAGFLEET_TAG_")

    missing_only: bool = Field(
        False, description="skip assets the current fleet version already tagged"
    )
    changed: bool = Field(
        False,
        description="only objects whose ETag differs from the one their stored results were"
        " computed from, or that have none stored (local files, without an ETag, are taken)",
    )
    functions: CommaList = Field(
        (), description="comma-separated function names to run (empty: every fleet function)"
    )
    results: bool = Field(
        True,
        description="publish a result event per tagged asset on results_topic, like the"
        " service (--no-results: the store only, no Kafka needed)",
    )
    results_topic: str = Field("asset-tags", description="topic of the result events")
    batch_size: int = Field(32, ge=1, description="inference batch size")
    workers: int = Field(8, ge=1, description="parallel reads and decodes")
    progress: bool = Field(True, description="a progress bar on stderr when it is a terminal")
    strict: bool = Field(
        False,
        description="exit 1 when any image failed (off: failures are reported on stderr and the"
        " exit code is 0; 3 when the fleet itself is broken)",
    )

    @field_validator("functions", mode="after")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return function_names(value)


class PublishOptions(BaseSettings):
    """``tagfleet publish``."""

    model_config = _config("TAGFLEET_PUBLISH_")

    missing_only: bool = Field(
        False,
        description="only objects without a current result of the serving version of every"
        " requested function (reads --store and loads --fleet)",
    )
    changed: bool = Field(
        False,
        description="only objects whose ETag differs from the one their stored results were"
        " computed from, or that have none stored (reads --store)",
    )

    functions: CommaList = Field(
        (), description="comma-separated function names to request (empty: all)"
    )
    lane: Literal["backfill", "upload"] = Field(
        "backfill",
        description="backfill: onto the backfill lane's topic (backfill_topic), served with the"
        " capacity uploads leave; upload: onto the topic of uploads (served first)",
    )

    @field_validator("functions", mode="after")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return function_names(value)


class ResetOptions(BaseSettings):
    """``tagfleet reset``."""

    model_config = _config("TAGFLEET_RESET_")

    yes: bool = Field(False, description="confirm the deletion (without it nothing is deleted)")


class DbUpgradeOptions(BaseSettings):
    """``tagfleet db upgrade``."""

    model_config = _config("TAGFLEET_DB_")

    revision: str = Field("head", description="target revision")


class DemoOptions(BaseSettings):
    """``tagfleet demo``: the local stack, nothing of a deployment's settings."""

    model_config = _config("TAGFLEET_DEMO_")

    workdir: str = Field("var/demo", description="where the demo keeps its fleet, images and store")
    images: int = Field(12, ge=1, le=500, description="number of demo images")
    build_fleet_only: bool = Field(
        False, description="only build the demo fleet into --workdir and exit"
    )
    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Kafka of the local stack (infra/stack.sh)"
    )


class DlqListOptions(BaseSettings):
    """``tagfleet dlq list``."""

    model_config = _config("TAGFLEET_DLQ_LIST_")

    reason: Reason | None = Field(None, description="only this reason (unset: every reason)")
    samples: int = Field(3, ge=0, le=100, description="dead letters shown per reason")
    json_output: bool = Field(False, description="JSON on stdout instead of a table")


class DlqRedriveOptions(BaseSettings):
    """``tagfleet dlq redrive``."""

    model_config = _config("TAGFLEET_DLQ_REDRIVE_")

    reason: Reason = Field(description="redrive the dead letters of this reason")
    since: AwareDatetime | None = Field(
        None,
        description="only dead letters written at or after this time (ISO 8601 with its time"
        " zone, e.g. 2026-12-06T08:00:00Z)",
    )
    force: bool = Field(
        False, description="also send dead letters already redriven, or that failed again after one"
    )
    dry_run: bool = Field(False, description="print what would be sent, send nothing")
