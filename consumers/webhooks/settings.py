"""The options of ``tagfleet webhook ...`` (``TAGFLEET_WEBHOOK_*``)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.options import CommaList


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, frozen=True, extra="ignore")


class WebhookFile(BaseSettings):
    """Where the endpoints are registered (every ``webhook`` command)."""

    model_config = _config("TAGFLEET_WEBHOOK_")

    webhooks: str = Field(
        "webhooks.json", description="the endpoints' file (written 0600: it holds the secrets)"
    )


class WebhookAddOptions(BaseSettings):
    """``tagfleet webhook add``."""

    model_config = _config("TAGFLEET_WEBHOOK_ADD_")

    events: CommaList = Field(("tags", "removed"), description="comma-separated: tags, removed")
    tenant: str | None = Field(None, description="only this tenant's events (unset: all)")

    @field_validator("events", mode="after")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        wrong = [v for v in value if v not in ("tags", "removed")]
        if wrong or not value:
            raise ValueError(f"events are tags, removed; not {', '.join(wrong) or 'none'}")
        return value


class WebhookDelivery(BaseSettings):
    """How ``webhook serve`` and ``webhook redrive`` deliver."""

    model_config = _config("TAGFLEET_WEBHOOK_")

    results_topic: str = Field("asset-tags", description="the result topic to deliver")
    dlq_topic: str = Field(
        "asset-tags.webhooks.dlq", description="dead letters of every endpoint, by header"
    )
    group: str = Field(
        "tagfleet-webhooks", description="consumer group prefix (one group per endpoint)"
    )
    timeout_s: float = Field(5.0, gt=0, description="longest wait for one POST")
    budget_s: float = Field(
        300.0, gt=0, description="retry a record this long, then dead-letter it"
    )
    backoff_s: float = Field(0.5, gt=0, description="first retry's backoff (doubles, jittered)")


class WebhookServe(BaseSettings):
    """Where ``webhook serve`` answers ``/metrics``, ``/healthz`` and ``/readyz``."""

    model_config = _config("TAGFLEET_WEBHOOK_")

    metrics_host: str = Field(
        "0.0.0.0",  # noqa: S104 - a pod's metrics port, like the consumer's
        description="bind address of /metrics, /healthz, /readyz",
    )
    metrics_port: int = Field(
        9109, ge=0, le=65535, description="port of /metrics, /healthz, /readyz (0 = off)"
    )
