"""Settings that ``models/`` shares with the service: where the fleet file is, and how models run.

Pure pydantic-settings models, no torch: the command line builds them once from flags and
``TAGFLEET_*`` variables (see :mod:`models.options`) and passes them down; library code never
reads the environment. :func:`defaults` gives the values a caller that passes nothing gets.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TAGFLEET_"
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")
Model = TypeVar("Model", bound=BaseModel)


class FleetFile(BaseSettings):
    """Which fleet a command serves or edits (shared by every command that names one)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    fleet: str = Field("fleet.yaml", description="Path or s3:// URI of fleet.yaml.")


class Runtime(BaseSettings):
    """Where models run and where their weights are cached: every command that runs a model."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    device: str | None = Field(
        None,
        description="torch device for the models (cuda, cuda:1, cpu; unset: CUDA when available,"
        " else the CPU).",
    )

    @field_validator("device", mode="before")
    @classmethod
    def _torch_device(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip() or None
            if value is not None and not _DEVICE.fullmatch(value):
                raise ValueError("a torch device: cpu, cuda, cuda:N or mps")
        return value

    cache_dir: Path = Field(
        Path.home() / ".cache" / "tagfleet",
        description="Local cache of fetched weights and of training's embedding cache.",
    )

    offline: bool = Field(
        False,
        description="Refuse to download weights from the model hub: name weights in your own"
        " bucket instead (tagfleet weights fetch), so pods never reach the internet.",
    )


class Serving(BaseSettings):
    """How a fleet is served: the commands that tag (the service, ``tag``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    compile: bool = Field(
        False,
        description="torch.compile the backbones (faster steady state on a GPU after minutes of"
        " warm-up; leave off on the CPU).",
    )


def defaults(model: type[Model]) -> Model:
    """``model`` with every field at its default, the environment not consulted."""
    return model.model_construct()


Settings = TypeVar("Settings", bound=BaseSettings)


def from_values(model: type[Settings], **values: Any) -> Settings:
    """``model`` validated from ``values`` and its defaults alone, no variable consulted: for a
    command that runs another's code on its own terms (the demo runs the service)."""
    return _explicit(model)(**values)


@cache
def _explicit(model: type[Settings]) -> type[Settings]:
    class Explicit(model):  # type: ignore[valid-type, misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: Any,
            env_settings: Any,
            dotenv_settings: Any,
            file_secret_settings: Any,
        ) -> tuple[Any, ...]:
            return (init_settings,)

    Explicit.__name__ = model.__name__
    return Explicit
