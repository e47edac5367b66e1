"""Head types: a small registry so that a new head is one module; heads only infer.

A head type is registered with :func:`register` under a :class:`~models.manifest.FunctionType`
and provides:

- ``build(manifest, dims) -> torch.nn.Module``: a fresh head whose ``forward(features)`` takes
  the :class:`~models.backbones.Features` of one backbone pass (``pooled`` (B, D) and
  ``tokens`` (B, N, W) on a ``grid``) and returns a tensor (or a tuple/dict of tensors) of raw
  outputs for the batch. Weights are loaded into it afterwards from the artifact's
  ``head.safetensors`` (``state_dict`` round trip), so everything the head needs at inference
  lives either in its parameters/buffers or in the manifest (``labels``, ``thresholds``,
  ``temperature``, the free-form ``head`` dict).
- ``results(raw, manifest, orig_sizes) -> list[dict]``: one result object per image, in the
  result-event shape of DESIGN.md, with plain Python floats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.manifest import FunctionType, Manifest


@dataclass(frozen=True)
class HeadDims:
    """What a head may size itself by: the backbone's dimensions."""

    embed_dim: int
    token_dim: int | None
    input_size: int
    patch_size: int | None


@dataclass(frozen=True)
class HeadType:
    """``build`` and ``results``: see the module docstring. Heads only infer; training a
    function type is its task's (:mod:`models.tasks`)."""

    build: Callable[[Manifest, HeadDims], torch.nn.Module]
    results: Callable[[Any, Manifest, Sequence[tuple[int, int]]], list[dict[str, Any]]]


_REGISTRY: dict[FunctionType, HeadType] = {}


def register(kind: FunctionType, head: HeadType) -> None:
    """Register (or replace) the head type for ``kind``."""
    _REGISTRY[kind] = head


def head_type(kind: FunctionType | str) -> HeadType:
    """The head type for ``kind``; importing its module on first use (``models.heads.<kind>``)."""
    kind = FunctionType(kind)
    if kind not in _REGISTRY:
        import importlib

        try:
            importlib.import_module(f"models.heads.{kind.value}")
        except ModuleNotFoundError as exc:
            raise ValueError(f"no head type registered for {kind.value!r}") from exc
    return _REGISTRY[kind]
