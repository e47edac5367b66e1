"""New labels and search on stored embeddings: no image is fetched, decoded or encoded again.

The consumer keeps each image's pooled embedding (the ``features.pooled`` its heads read) in
an embedding store under its backbone's key (:func:`models.backbones.backbone_key`). Here:

- :func:`train_from_embeddings`: a classify or tags probe (the linear head of probe mode,
  :func:`models.training.loop.fit_probe`) trained on the stored embeddings of labelled asset
  ids, calibrated and evaluated on a held-out split; a normal function artifact (it names its
  backbone, so the fleet serves it on images too);
- :func:`score_embeddings` and :func:`results_from_embeddings`: what a function says about
  stored embeddings, exactly what its pooled head says about the images (batched matrix
  products, no backbone);
- :func:`text_vector` and :func:`exact_nearest`: text search through the backbone's text
  tower and an exact cosine scan of the store.

The store is any object with the few methods of :class:`EmbeddingSource` (the embedding
store's protocol has them).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from models.artifacts import Artifact
from models.backbones import Backbone, Features, backbone_key, resolve_ref
from models.data.samples import MIN_PER_LABEL, Dataset, DatasetError, stratified_split
from models.heads import head_type
from models.heads.linear import LinearHead
from models.manifest import FunctionType, Manifest, Mode
from models.tasks.linear import calibrate, score_metrics
from models.training.evaluation import Evaluation
from models.training.loop import fit_probe
from models.training.presets import resolve
from models.training.report import HEADLINE, build_report
from models.training.spec import TrainSpec

SOURCE = "stored embeddings"  # the report's and the manifest's word for where training read


class EmbeddingSource(Protocol):
    """What training, apply and search read of an embedding store."""

    def get(self, backbone: str, asset_ids: Sequence[str]) -> dict[str, np.ndarray]: ...

    def scan(
        self,
        backbone: str,
        *,
        prefix: str | None = None,
        tenant: str | None = None,
        batch_size: int = 4096,
    ) -> Iterator[tuple[list[str], np.ndarray]]: ...


class NotServableFromEmbeddings(ValueError):
    """The function reads more than the stored pooled embedding (patches, its own weights)."""


def load_labelled_ids(
    source: str, kind: FunctionType | str, min_per_label: int = MIN_PER_LABEL
) -> Dataset:
    """Labelled asset ids from a JSONL or CSV manifest (DESIGN.md's, with ids for images).

    Each row names its asset by ``asset_id``, else ``image`` taken as written (an asset id
    or an ``s3://`` URI, which is the asset id the consumer stores for that object), plus
    ``label`` (classify) or ``labels`` (tags). ``Sample.image`` holds the asset id.
    """
    if not source.lower().endswith((".jsonl", ".json", ".csv")):
        raise DatasetError(f"{source}: --from-embeddings reads a JSONL or CSV manifest of ids")
    from models.data import labelled

    rows = labelled._rows(source)
    samples = []
    for where, row in rows:
        asset = row.get("asset_id") or row.get("image")
        if not asset or not isinstance(asset, str):
            raise DatasetError(f"{where}: missing 'asset_id' (or 'image')")
        labels = labelled._row_labels(where, row, FunctionType(kind))
        samples.append(labelled.Sample(asset, labels))
    if not samples:
        raise DatasetError(f"{source}: no samples")
    ids = [s.image for s in samples]
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"{source}: asset {twice!r} is listed more than once")
    found = sorted({label for s in samples for label in s.labels})
    labelled._check_counts(samples, found, min_per_label)
    return Dataset(FunctionType(kind), found, samples, source)


def stored_matrix(store: EmbeddingSource, key: str, asset_ids: Sequence[str]) -> np.ndarray:
    """(N, D) float32 stored embeddings of ``asset_ids`` in order; a DatasetError naming the
    ids that have none (they are not in the library yet, or under another backbone)."""
    found = store.get(key, list(asset_ids))
    missing = [a for a in asset_ids if a not in found]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(asset_ids)} labelled assets have no stored embedding for"
            f" backbone {key!r} (e.g. {missing[0]!r}): tag them first (tagfleet publish or tag),"
            " or name the backbone the library was embedded with (--backbone, --weights)"
        )
    return np.stack([np.asarray(found[a], dtype=np.float32) for a in asset_ids])


def _data_hash(dataset: Dataset, emb: np.ndarray) -> str:
    digest = hashlib.sha256()
    for sample in dataset.samples:
        digest.update(json.dumps([sample.image, list(sample.labels)]).encode())
    digest.update(np.ascontiguousarray(emb, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def train_from_embeddings(
    dataset: Dataset | str, spec: TrainSpec, store: EmbeddingSource
) -> Artifact:
    """Train a classify or tags probe on the stored embeddings of ``dataset``'s asset ids.

    No image is read and the backbone is not loaded: the embeddings are looked up under
    ``backbone_key(spec.backbone, spec.weights)``. The held-out split (``spec.val_fraction``,
    stratified) fits the temperature or thresholds and gives the report's figures. The
    artifact names the backbone, so the fleet serves it on images as well.
    """
    kind = FunctionType(spec.type)
    if kind not in (FunctionType.CLASSIFY, FunctionType.TAGS):
        raise DatasetError(f"--from-embeddings trains classify or tags, not {kind.value}")
    if spec.mode != Mode.PROBE or spec.zero_shot_init or spec.tile:
        raise DatasetError(
            "--from-embeddings trains a probe on the pooled embedding: no --mode finetune,"
            " --zero-shot-init or --tile (those need the images or the text tower)"
        )
    if isinstance(dataset, str):
        dataset = load_labelled_ids(dataset, kind)
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    ref = resolve_ref(spec.backbone, spec.weights)
    key = backbone_key(ref)
    ids = [s.image for s in dataset.samples]
    emb = stored_matrix(store, key, ids)
    y = dataset.targets()
    device = torch.device(spec.device or "cpu")
    settings = resolve(spec)
    tr, va = stratified_split(y, spec.val_fraction, spec.seed)
    head = LinearHead(emb.shape[1], len(dataset.labels)).to(device)
    fit = fit_probe(head, kind, (emb[tr], y[tr]), (emb[va], y[va]), settings, spec, device)
    with torch.inference_mode():
        x = torch.as_tensor(emb[va], device=device)
        val_logits = head(Features(x, None, None)).float().cpu().numpy()
    training = {
        "source": SOURCE,
        "embedding_key": key,
        "recipe": settings.record(),
        "pooling": "pooled",
        "kept": fit.kept,
        "val_macro_f1": round(fit.score, 6),
    }
    manifest = Manifest(
        name=spec.name,
        type=kind,
        labels=dataset.labels,
        backbone=ref,
        mode=Mode.PROBE,
        head={"pooling": "pooled"},
        training=training,
        training_data_hash=_data_hash(dataset, emb),
        **calibrate(kind, val_logits, y[va], dataset.labels, spec.target_precision),
    )
    state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    artifact = Artifact(manifest, state).with_version()
    scores = served_scores(artifact, emb[va])
    metrics = score_metrics(artifact, y[va], scores)
    artifact.manifest = artifact.manifest.model_copy(
        update={"metrics": {k: metrics[k] for k in HEADLINE[kind]}}
    )
    artifact = artifact.with_version()
    extra = {
        "mode": "probe",
        "trained_from": SOURCE,
        "embedding_key": key,
        "train_samples": len(tr),
        "training": {
            **training,
            "runs": [fit.record()],
            "seconds": round(time.perf_counter() - started, 2),
        },
    }
    split = "held-out validation split of the labelled ids (stored embeddings, no image read)"
    _, artifact.files = build_report(
        artifact, Evaluation(scores, y[va], metrics), split=split, extra=extra
    )
    return artifact


def pooled_weights(artifact: Artifact) -> tuple[np.ndarray, np.ndarray]:
    """(W (L, D), b (L,)) float32 of a function that reads only the pooled embedding.

    Raises :class:`NotServableFromEmbeddings` for detect, a fine-tuned function (its own
    backbone: the stored embeddings are another model's) or a head whose patch layers are
    trained (the stored pooled embedding alone would score differently from the service).
    """
    m = artifact.manifest
    if m.type not in (FunctionType.CLASSIFY, FunctionType.TAGS):
        raise NotServableFromEmbeddings(f"{m.name}: {m.type.value} reads patch tokens")
    if artifact.backbone_state is not None or m.mode == Mode.FINETUNE:
        raise NotServableFromEmbeddings(
            f"{m.name}: fine-tuned with its own backbone weights; the stored embeddings are"
            " the shared backbone's"
        )
    state = artifact.head_state
    for name in ("patch.weight", "attend.weight"):
        if name in state and bool(torch.count_nonzero(state[name])):
            raise NotServableFromEmbeddings(
                f"{m.name}: its head reads patch tokens ({m.head.get('pooling')}); only a"
                " pooled head scores the same from stored embeddings"
            )
    weight = state["linear.weight"].float().numpy()
    bias = state["linear.bias"].float().numpy()
    return weight, bias


def score_embeddings(weights: tuple[np.ndarray, np.ndarray], vectors: np.ndarray) -> np.ndarray:
    """(N, L) float32 logits of ``vectors`` (N, D), any float dtype: ``W @ normalize(v) + b``
    (the pooled head's forward, in numpy)."""
    w, b = weights
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, 1e-12)  # torch's F.normalize
    logits: np.ndarray = x @ w.T + b
    return logits


def served_scores(artifact: Artifact, vectors: np.ndarray) -> np.ndarray:
    """(N, L) scores as served (classify: calibrated probabilities; tags: sigmoid)."""
    logits = score_embeddings(pooled_weights(artifact), vectors)
    m = artifact.manifest
    if m.type == FunctionType.CLASSIFY:
        z = logits / m.temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(z / z.sum(axis=1, keepdims=True), dtype=np.float64)
    return np.asarray(1 / (1 + np.exp(-logits)), dtype=np.float64)


def results_from_embeddings(
    artifact: Artifact,
    vectors: np.ndarray,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One result object per vector, exactly as the head's ``results`` writes it for images
    (the result-event shape of DESIGN.md)."""
    logits = score_embeddings(weights or pooled_weights(artifact), vectors)
    sizes = [(0, 0)] * len(logits)
    return head_type(artifact.manifest.type).results(
        torch.from_numpy(logits), artifact.manifest, sizes
    )


def text_vector(backbone: Backbone, text: str) -> np.ndarray:
    """(D,) float32 L2-normalised embedding of ``text`` by ``backbone``'s text tower."""
    if not text.strip():
        raise ValueError("the query text is empty")
    return np.asarray(backbone.encode_text([text])[0].cpu().numpy(), dtype=np.float32)


def exact_nearest(
    store: EmbeddingSource,
    key: str,
    vector: np.ndarray,
    k: int,
    *,
    prefix: str | None = None,
    tenant: str | None = None,
    batch_size: int = 65536,
) -> list[tuple[str, float]]:
    """The ``k`` stored embeddings of ``key`` with the highest cosine to ``vector``, best first,
    by a full scan (exact; for small libraries and for checking an approximate index)."""
    if k < 1:
        return []
    q = np.asarray(vector, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    best_ids: list[str] = []
    best = np.empty(0, dtype=np.float32)
    for ids, vectors in store.scan(key, prefix=prefix, tenant=tenant, batch_size=batch_size):
        x = np.asarray(vectors, dtype=np.float32)
        sims = (x @ q) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
        pool = np.concatenate([best, sims])
        pool_ids = best_ids + list(ids)
        keep = np.argpartition(-pool, k - 1)[:k] if len(pool) > k else np.arange(len(pool))
        keep = keep[np.argsort(-pool[keep], kind="stable")]
        best = pool[keep]
        best_ids = [pool_ids[i] for i in keep]
    return [(a, float(s)) for a, s in zip(best_ids, best, strict=True)]
