"""Shared open_clip backbones: build once, encode batched uint8 images on the device.

A backbone is an open_clip model (a built-in name, a name registered from ``models/configs``,
or an inline config dict from a model-config JSON) plus weights (see :mod:`models.weights`).
:meth:`Backbone.encode` runs ONE forward pass of the image tower and returns both the pooled
image embedding (for classify/tags heads) and the patch tokens (for the detect head).
Normalisation, resizing, dtype and device transfer happen on the device, batched.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from models import storage
from models.manifest import BackboneRef
from models.weights import StateDict, fetch_local, random_seed

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)  # tiny configs are loadable by name, e.g. "tiny-vit"


@dataclass
class Features:
    """Output of one image-tower pass.

    ``pooled``: (B, D) projected image embedding, float32, not normalised.
    ``tokens``: (B, N, W) patch tokens after the final norm (class token removed), float32,
    in row-major order over a ``grid`` of (rows, cols) patches; ``None`` for non-ViT towers.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None
    grid: tuple[int, int] | None

    def select(self, index: torch.Tensor | list[int]) -> Features:
        """The features of a subset of the batch."""
        tokens = None if self.tokens is None else self.tokens[index]
        return Features(self.pooled[index], tokens, self.grid)


def resolve_ref(backbone: str, weights: str | None = None) -> BackboneRef:
    """Turn a ``--backbone`` value (model name or config-JSON path) into a :class:`BackboneRef`.

    A config file is inlined so that artifacts referring to it are self-contained.
    """
    path = Path(backbone)
    if backbone.endswith(".json") or path.is_file():
        config = json.loads(path.read_text())
        return BackboneRef(model=path.stem, config=config, weights=weights)
    if open_clip.get_model_config(backbone) is None:
        raise ValueError(
            f"unknown backbone {backbone!r}: not an open_clip model name nor a config JSON file"
        )
    return BackboneRef(model=backbone, weights=weights)


def model_config(ref: BackboneRef) -> dict[str, Any]:
    """The open_clip model config dict of ``ref`` (a copy)."""
    config = ref.config if ref.config is not None else open_clip.get_model_config(ref.model)
    if config is None:
        raise ValueError(f"unknown open_clip model {ref.model!r}")
    return copy.deepcopy(config)


def backbone_key(ref: BackboneRef, weights_id: str | None = None) -> str:
    """Identity of a backbone: (model name or config hash, weights id). Equal keys share one."""
    if ref.config is not None:
        blob = json.dumps(ref.config, sort_keys=True).encode()
        model = "config:" + hashlib.sha256(blob).hexdigest()[:16]
    else:
        model = ref.model
    seed = random_seed(ref.weights)
    weights = weights_id or (f"random:{seed}" if seed is not None else str(ref.weights))
    return f"{model}|{weights}"


def _instantiate(config: dict[str, Any], seed: int) -> torch.nn.Module:
    config.pop("preprocess_cfg", None)
    custom_text = config.pop("custom_text", False) or "hf_model_name" in config.get("text_cfg", {})
    if "multimodal_cfg" in config:
        cls: type = open_clip.CoCa
    elif custom_text:
        cls = open_clip.CustomTextCLIP
    else:
        cls = open_clip.CLIP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**config)


class OfflineError(RuntimeError):
    """Weights would come from the model hub, and this process may not download."""


def _pretrained_cfg(ref: BackboneRef) -> dict[str, Any]:
    """open_clip's config of ``ref``'s pretrained tag, ``{}`` when the weights are no tag."""
    if ref.config is not None or ref.weights is None or random_seed(ref.weights) is not None:
        return {}
    return open_clip.get_pretrained_cfg(ref.model, ref.weights) or {}


def _hub_download(tag_cfg: dict[str, Any], cache: Path | None, offline: bool, what: str) -> Path:
    if offline:
        raise OfflineError(
            f"{what}: a pretrained tag comes from the model hub and downloads are off; put the "
            "weights in a bucket once (weights fetch) and name the s3:// object or a local file"
        )
    from open_clip.pretrained import download_pretrained

    return Path(download_pretrained(tag_cfg, cache_dir=str(cache / "hub") if cache else None))


def _weights_path(
    ref: BackboneRef, cache: Path | None, offline: bool = False
) -> tuple[Path, dict[str, Any]]:
    """Local path of the weights and the pretrained tag's preprocessing overrides."""
    assert ref.weights is not None
    tag_cfg = _pretrained_cfg(ref)
    if tag_cfg:
        return _hub_download(tag_cfg, cache, offline, f"{ref.model} {ref.weights}"), tag_cfg
    return fetch_local(ref.weights, cache), {}


def fetch_weights(model: str, tag: str, dest: str, cache: Path | None = None) -> str:
    """Put the hub weights of ``model``'s pretrained ``tag`` at ``dest`` (a folder or ``s3://``
    prefix) once: the object to name as weights, so pods never reach the internet. Returns
    its URI (``dest/<model>-<tag><suffix>``)."""
    tag_cfg = _pretrained_cfg(BackboneRef(model=model, weights=tag))
    if not tag_cfg:
        raise ValueError(f"{model!r} has no pretrained tag {tag!r} in open_clip")
    path = _hub_download(tag_cfg, cache, False, f"{model} {tag}")
    uri = storage.join(dest, f"{model}-{tag}{''.join(path.suffixes) or '.bin'}")
    storage.write_bytes(uri, path.read_bytes())
    return uri


def build_model(
    ref: BackboneRef,
    state: StateDict | None = None,
    cache_dir: Path | None = None,
    offline: bool = False,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the open_clip model of ``ref`` on the CPU; return it and its preprocess config.

    ``state`` (e.g. a fine-tuned artifact's own weights) takes precedence over ``ref.weights``.
    ``offline``: a pretrained tag (a hub download) raises :class:`OfflineError` at once.
    """
    if offline and state is None and _pretrained_cfg(ref):
        _hub_download({}, cache_dir, True, f"{ref.model} {ref.weights}")
    config = model_config(ref)
    preprocess = {
        "mean": OPENAI_DATASET_MEAN,
        "std": OPENAI_DATASET_STD,
        **config.get("preprocess_cfg", {}),
    }
    seed = random_seed(ref.weights)
    model = _instantiate(config, seed if seed is not None else 0)
    if state is not None:
        model.load_state_dict(state, strict=True)
    elif seed is None:
        path, tag_cfg = _weights_path(ref, cache_dir, offline)
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
        preprocess.update({k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg})
    return model.eval(), preprocess


def auto_device() -> torch.device:
    """CUDA when available, else the CPU (``TAGFLEET_DEVICE`` reaches :class:`Backbone` as its
    ``device``)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None  # CPU: exact float32, so round trips and golden outputs are bit-stable
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Backbone:
    """One open_clip model on one device, shared by every function that names it.

    ``forward_calls`` counts image-tower passes (tests assert one per batch).
    Not thread-safe: one caller at a time.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        key: str,
        preprocess: dict[str, Any],
        tokenizer: Any,
        device: torch.device | str | None = None,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device) if device is not None else auto_device()
        self.key = key
        # open_clip ships no types and its towers' attributes vary by architecture: Any.
        self.model: Any = model.to(self.device).requires_grad_(False)  # fine-tuning re-enables
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.visual: Any = self.model.visual
        if hasattr(self.visual, "output_tokens"):
            self.visual.output_tokens = True  # ViT: one pass gives pooled + patch tokens
        self._visual_call = torch.compile(self.visual) if compile else self.visual
        size = self.visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        patch = getattr(self.visual, "patch_size", None)
        self.patch_size = int(patch[0]) if isinstance(patch, tuple | list) else patch
        self.embed_dim = _embed_dim(self.visual)
        transformer = getattr(self.visual, "transformer", None)
        self.token_dim = int(transformer.width) if transformer is not None else None
        self.mean = torch.tensor(preprocess["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess["std"], device=self.device).view(1, 3, 1, 1)
        self.tokenizer = tokenizer
        self.autocast_dtype = _autocast_dtype(self.device)
        self.forward_calls = 0

    def autocast(self) -> torch.autocast:
        """bf16 (or fp16) autocast on CUDA; a no-op on the CPU."""
        return torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    def to_pixels(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> normalised float (B, 3, S, S) on the device, resized if needed."""
        batch = torch.as_tensor(images)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
            raise ValueError(f"expected uint8 (B, H, W, 3) images, got {tuple(batch.shape)}")
        non_blocking = self.device.type == "cuda"
        if non_blocking and batch.device.type == "cpu":  # a GPU decode left it there already
            batch = batch.pin_memory()
        x = batch.to(self.device, non_blocking=non_blocking).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.input_size, self.input_size):
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward_pixels(self, pixels: torch.Tensor) -> Features:
        """One image-tower pass on normalised pixels (gradients flow; used by fine-tuning)."""
        self.forward_calls += 1
        with self.autocast():
            out = self._visual_call(pixels)
        pooled, tokens = out if isinstance(out, tuple) else (out, None)
        grid = None
        if tokens is not None and self.patch_size:
            grid = (pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size)
            tokens = tokens.float()
        return Features(pooled.float(), tokens, grid)

    @torch.inference_mode()
    def encode(self, images: np.ndarray | torch.Tensor) -> Features:
        """Pooled embedding and patch tokens of a uint8 (B, H, W, 3) batch, in one pass."""
        return self.forward_pixels(self.to_pixels(images))

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings (len(texts), D), float32."""
        tokens = self.tokenizer(texts).to(self.device)
        with self.autocast():
            emb = self.model.encode_text(tokens)
        return F.normalize(emb.float(), dim=-1)


def _embed_dim(visual: Any) -> int:
    """Output dimension of the image tower."""
    if getattr(visual, "output_dim", None):
        return int(visual.output_dim)
    proj = getattr(visual, "proj", None)
    if proj is None:
        raise ValueError("cannot find the embedding dimension of this open_clip image tower")
    return int(proj.shape[-1])


def make_tokenizer(ref: BackboneRef) -> Any:
    """The tokenizer of ``ref`` (built-in names through open_clip, configs from their text_cfg)."""
    if ref.config is None:
        return open_clip.get_tokenizer(ref.model)
    text_cfg = ref.config.get("text_cfg", {})
    context_length = text_cfg.get("context_length", 77)
    if "hf_tokenizer_name" in text_cfg:
        return open_clip.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"], context_length=context_length
        )
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def load_backbone(
    ref: BackboneRef,
    state: StateDict | None = None,
    weights_id: str | None = None,
    device: torch.device | str | None = None,
    compile: bool = False,
    cache_dir: Path | None = None,
    offline: bool = False,
) -> Backbone:
    """Build a :class:`Backbone` for ``ref`` (``state`` overrides its weights, see build_model;
    ``cache_dir``: where fetched weights are kept)."""
    model, preprocess = build_model(ref, state, cache_dir, offline)
    key = backbone_key(ref, weights_id)
    return Backbone(model, key, preprocess, make_tokenizer(ref), device=device, compile=compile)
