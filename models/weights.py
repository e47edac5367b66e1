"""Loading and saving backbone weights: safetensors first, never unpickling arbitrary objects.

A weights reference is one of:
- ``None`` or ``"random"`` / ``"random:SEED"``: random initialisation, seeded (default seed 0),
  so that tiny test and demo backbones are identical in every process;
- an open_clip pretrained tag for the model name (e.g. ``laion2b_s34b_b79k``);
- a local file (``.safetensors``; other files only through ``torch.load(weights_only=True)``);
- an ``s3://`` object, fetched once into a local cache directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from models import storage
from models.settings import Runtime, defaults

StateDict = dict[str, torch.Tensor]


def random_seed(weights: str | None) -> int | None:
    """The seed for a ``random[:SEED]`` reference, or ``None`` when it names real weights."""
    if weights is None or weights == "random":
        return 0
    if weights.startswith("random:"):
        return int(weights.split(":", 1)[1])
    return None


def cache_dir() -> Path:
    """The default cache of fetched weights and embeddings (:class:`~models.settings.Runtime`'s
    ``cache_dir``; the command line passes the configured one down)."""
    return defaults(Runtime).cache_dir


def fetch_local(uri: str, cache: Path | None = None) -> Path:
    """Return a local path for ``uri``, downloading an ``s3://`` object into ``cache``
    (default: :func:`cache_dir`) once."""
    if not storage.is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {uri}")
        return path
    name = hashlib.sha256(uri.encode()).hexdigest()[:16] + "-" + Path(uri).name
    path = (cache or cache_dir()) / "weights" / name
    if not path.exists():
        storage.write_bytes(path.with_suffix(".part"), storage.read_bytes(uri))
        path.with_suffix(".part").replace(path)
    return path


def state_dict_bytes(state: StateDict) -> bytes:
    """Serialise a state dict as safetensors bytes (contiguous CPU copies)."""
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in state.items()})


def state_dict_from_bytes(data: bytes) -> StateDict:
    """Inverse of :func:`state_dict_bytes`."""
    return st_load(data)
