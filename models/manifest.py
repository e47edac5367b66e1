"""The function manifest: the typed, validated JSON at the root of every artifact."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A function's name: what fleet.yaml, manifests, events and the API accept.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

MANIFEST_FILE = "manifest.json"


class FunctionType(StrEnum):
    CLASSIFY = "classify"
    TAGS = "tags"
    DETECT = "detect"


class Mode(StrEnum):
    """``probe``: head on a frozen shared backbone. ``finetune``: the artifact has its own."""

    PROBE = "probe"
    FINETUNE = "finetune"
    ZERO_SHOT = "zero_shot"


class BackboneRef(BaseModel):
    """Which backbone a function runs on.

    ``model``: open_clip model name (or the stem of the config file it came from).
    ``config``: the inline open_clip config dict when a config file was used (self-contained).
    ``weights``: pretrained tag, local file, ``s3://`` object, ``random[:SEED]`` or ``None``
    (= ``random:0``). Artifacts in finetune mode ignore it: their own backbone weights win.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    config: dict[str, Any] | None = None
    weights: str | None = None


class Manifest(BaseModel):
    """Everything about a function except its tensors.

    ``thresholds``: per-label decision thresholds (tags; detect score threshold under ``"*"``).
    ``temperature``: softmax temperature (classify), fitted on validation.
    ``training``: how the function was trained (the recipe's settings, the pooling chosen on
    validation, the checkpoint kept); empty for functions not trained here.
    ``version``: content hash of this manifest without ``version`` plus the weight files;
    set by :func:`models.artifacts.save_artifact`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    type: FunctionType
    labels: list[str] = Field(min_length=1)
    backbone: BackboneRef
    mode: Mode = Mode.PROBE
    thresholds: dict[str, float] = Field(default_factory=dict)
    temperature: float = Field(default=1.0, gt=0)
    head: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_data_hash: str | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    version: str | None = None

    @model_validator(mode="after")
    def _labels_unique(self) -> Manifest:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique: {self.labels}")
        unknown = set(self.thresholds) - set(self.labels) - {"*"}
        if unknown:
            raise ValueError(f"thresholds for unknown labels: {sorted(unknown)}")
        return self

    def content_hash(self, blobs: list[bytes]) -> str:
        """sha256 (first 16 hex) of the manifest without ``version`` and the given weight blobs."""
        digest = hashlib.sha256()
        # an empty ``training`` is left out: manifests written before it existed keep their hash
        exclude = {"version"} if self.training else {"version", "training"}
        body = self.model_dump(mode="json", exclude=exclude)
        digest.update(json.dumps(body, sort_keys=True).encode())
        for blob in blobs:
            digest.update(hashlib.sha256(blob).digest())
        return digest.hexdigest()[:16]
