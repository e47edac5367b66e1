"""``GET /v1/functions``: the fleet file's functions with their manifests' versions and their
reports' metrics, read as JSON (no model is loaded: the API never imports torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from models import storage


def _location(fleet_path: str, artifact: str) -> str:
    if storage.is_s3(artifact) or Path(artifact).is_absolute():
        return artifact
    if storage.is_s3(fleet_path):
        return storage.join(fleet_path.rsplit("/", 1)[0], artifact)
    return str(Path(fleet_path).parent / artifact)


def _json(uri: str) -> dict[str, Any]:
    try:
        data = json.loads(storage.read_bytes(uri))
    except (OSError, ValueError, KeyError, Exception):  # an unreadable file: shown as absent
        return {}
    return data if isinstance(data, dict) else {}


def fleet_functions(fleet_path: str) -> list[dict[str, Any]]:
    """One entry per function of ``fleet_path`` (an empty list when the file is missing)."""
    try:
        config = yaml.safe_load(storage.read_bytes(fleet_path)) or {}
    except (OSError, yaml.YAMLError, Exception):
        return []
    out = []
    for entry in config.get("functions", []) if isinstance(config, dict) else []:
        if not isinstance(entry, dict) or "name" not in entry or "artifact" not in entry:
            continue
        location = _location(fleet_path, str(entry["artifact"]))
        manifest = _json(storage.join(location, "manifest.json"))
        report = _json(storage.join(location, "report.json"))
        out.append(
            {
                "name": entry["name"],
                "role": entry.get("role", "serving"),
                "enabled": entry.get("enabled", True),
                "type": manifest.get("type"),
                "version": manifest.get("version"),
                "labels": manifest.get("labels", []),
                "metrics": report.get("metrics", {}),
            }
        )
    return out
