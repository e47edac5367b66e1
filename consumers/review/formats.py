"""The review topic's record values (docs/review.md): our JSON, or Label Studio's task import
form (``--review-format label-studio``), one task per item."""

from __future__ import annotations

import json
from typing import Any


def review_event(item: dict[str, Any]) -> dict[str, Any]:
    """The ``json`` form: the review item as ``GET /v1/review`` shows it, with its tenant."""
    return {
        "item": item["item"],
        "asset_id": item["asset_id"],
        "uri": item["uri"],
        "tenant": item["tenant"],
        "function": item["function"],
        "type": item["type"],
        "reason": item["reason"],
        "label": item["label"],
        "score": item["score"],
        "scores": item["scores"],
        "model_version": item["model_version"],
        "created_at": item["created_at"],
    }


def label_studio_task(item: dict[str, Any]) -> dict[str, Any]:
    """A Label Studio task with the model's proposal as a pre-annotation: ``data.image`` is the
    object's ``s3://`` URI (Label Studio's S3 source storage presigns it), the proposal a
    ``choices`` result from ``label`` to ``image`` (the labelling config names them so)."""
    result = []
    if item["label"] is not None:
        result.append(
            {
                "id": f"{item['item']}",
                "from_name": "label",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [item["label"]]},
            }
        )
    prediction: dict[str, Any] = {"model_version": item["model_version"], "result": result}
    if item["score"] is not None:
        prediction["score"] = item["score"]
    return {
        "data": {
            "image": item["uri"],
            "asset_id": item["asset_id"],
            "function": item["function"],
            "reason": item["reason"],
            "item": item["item"],
            "tenant": item["tenant"],
        },
        "predictions": [prediction],
    }


def encode(item: dict[str, Any], fmt: str) -> bytes:
    value = label_studio_task(item) if fmt == "label-studio" else review_event(item)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
