"""Search the library by image and by text on the stored embeddings (``tagfleet similar`` and
``tagfleet search``; the API's ``/v1/assets/{id}/similar`` and ``/v1/search/text``).

- similar: the assets whose stored embedding is nearest (cosine) to the given asset's;
- text: the assets nearest to the text's embedding by the backbone's text tower (the same
  open_clip model whose image tower made the stored embeddings, so both live in one space).

The embedding store answers with an exact scan while a backbone's table is small and with its
approximate index (exact re-ranking) once :meth:`maintain` built one. Every answer is the
tenant's only: the asset asked about must be a live asset of the tenant in the tag store, and
each hit is checked there too (a hit of another tenant or a removed asset is dropped, and more
are asked for until ``k`` remain or the store has no more).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.store.errors import translate_errors
from consumers.store.models import assets

DEFAULT_TENANT = "default"
MAX_K = 1000
_ID_CHUNK = 500


class SearchBackbone(BaseSettings):
    """Which stored embeddings are searched (``TAGFLEET_SEARCH_<NAME>``; also ``tagfleet api``)."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_SEARCH_", frozen=True, extra="ignore")

    backbone: str | None = Field(
        None,
        description="open_clip model name or model-config JSON of the stored embeddings (text"
        " search needs it for the text tower; unset for similar: the store's only backbone)",
    )
    weights: str | None = Field(
        None, description="the backbone's weights, as the fleet names them (tag, file, s3://)"
    )


class SearchOptions(SearchBackbone):
    """``similar`` and ``search``: the backbone, the tenant searched and how many."""

    tenant: str = Field(DEFAULT_TENANT, description="the tenant searched")
    k: int = Field(20, ge=1, le=MAX_K, description="how many assets to list, best first")


class SearchError(ValueError):
    """A search that cannot be answered as asked (the message says why)."""


class SearchUnavailable(SearchError):
    """The server cannot search yet: which embeddings to search is not known (say it)."""


class NotFound(LookupError):
    """The asset is not a live asset of the tenant, or has no stored embedding."""


@dataclass
class Searcher:
    """Similar and text search over one embedding store and the tag store's asset rows.

    ``key``: the backbone key of the stored embeddings searched (``None``: the store's only
    backbone, looked up at the first search). ``text_encoder``: gives the (loaded once)
    backbone whose text tower embeds queries; ``None``: text search is off.
    """

    embeddings: Any
    engine: sa.Engine
    key: str | None
    text_encoder: Callable[[], Any] | None = None
    _encoder: Any = field(default=None, repr=False)

    def backbone(self) -> str:
        """The backbone key searched; :class:`SearchUnavailable` while it is not known."""
        if self.key is None:
            self.key = embedding_key(self.embeddings, SearchBackbone())
        return self.key

    def similar(self, asset_id: str, k: int, tenant: str) -> list[dict[str, Any]]:
        """The ``k`` nearest assets of ``tenant`` to ``asset_id`` (itself left out)."""
        _check_k(k)
        if not visible(self.engine, [asset_id], tenant):
            raise NotFound("no such asset")
        found = self.embeddings.get(self.backbone(), [asset_id])
        if asset_id not in found:
            raise NotFound(
                "this asset has no stored embedding (not tagged since embeddings are kept)"
            )
        return self._nearest(found[asset_id], k, tenant, exclude=asset_id)

    def text(self, query: str, k: int, tenant: str) -> list[dict[str, Any]]:
        """The ``k`` assets of ``tenant`` nearest to ``query``'s text embedding."""
        _check_k(k)
        if not query.strip():
            raise SearchError("the query is empty")
        if self.text_encoder is None:
            raise SearchError("text search needs the backbone: set --backbone (and --weights)")
        if self._encoder is None:
            self._encoder = self.text_encoder()
        from models.from_embeddings import text_vector

        return self._nearest(text_vector(self._encoder, query), k, tenant, exclude=None)

    def _nearest(
        self, vector: np.ndarray, k: int, tenant: str, exclude: str | None
    ) -> list[dict[str, Any]]:
        store_tenant = None if tenant == DEFAULT_TENANT else tenant
        key = self.backbone()
        total = self.embeddings.count(key)
        ask = min(total, 2 * k + 10)
        while True:
            hits = self.embeddings.nearest(key, vector, max(ask, 1), tenant=store_tenant)
            ids = [a for a, _ in hits if a != exclude]
            uris = visible(self.engine, ids, tenant)
            kept = [
                {"asset_id": a, "uri": uris[a], "score": round(float(s), 6)}
                for a, s in hits
                if a in uris and a != exclude
            ]
            if len(kept) >= k or len(hits) < ask or ask >= total:
                return kept[:k]
            ask = min(total, ask * 4)


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise SearchError(f"k must be between 1 and {MAX_K}")


def visible(engine: sa.Engine, asset_ids: Sequence[str], tenant: str) -> dict[str, str]:
    """The live assets of ``tenant`` among ``asset_ids``: id -> uri."""
    a = assets.c
    found: dict[str, str] = {}
    with translate_errors("visible"), engine.connect() as conn:
        for start in range(0, len(asset_ids), _ID_CHUNK):
            chunk = list(asset_ids[start : start + _ID_CHUNK])
            query = sa.select(a.asset_id, a.uri).where(
                a.asset_id.in_(chunk), a.tenant == tenant, a.removed.is_(False)
            )
            found.update({row.asset_id: row.uri for row in conn.execute(query)})
    return found


def embedding_key(embeddings: Any, options: SearchBackbone) -> str:
    """The backbone key searched: ``--backbone``/``--weights``'s, else the store's only one."""
    if options.backbone is not None:
        from models.backbones import backbone_key, resolve_ref

        return backbone_key(resolve_ref(options.backbone, options.weights))
    keys = embeddings.backbones()
    if len(keys) != 1:
        raise SearchUnavailable(
            f"the embedding store holds {len(keys)} backbones ({', '.join(keys) or 'none'}):"
            " name one with --backbone (and --weights)"
        )
    return str(keys[0])


def text_encoder(options: SearchBackbone, runtime: Any = None) -> Callable[[], Any] | None:
    """A loader of the backbone named by ``options`` (``None`` when none is named)."""
    if options.backbone is None:
        return None
    backbone, weights = options.backbone, options.weights

    @cache
    def load() -> Any:
        from models.backbones import load_backbone, resolve_ref

        kwargs: dict[str, Any] = {}
        if runtime is not None:
            kwargs = {
                "device": runtime.device,
                "cache_dir": runtime.cache_dir,
                "offline": runtime.offline,
            }
        return load_backbone(resolve_ref(backbone, weights), **kwargs)

    return load


def searcher_for(
    location: str, engine: sa.Engine, backbone: SearchBackbone, runtime: Any = None
) -> Searcher:
    """A :class:`Searcher` of the embedding store at ``location`` over ``engine``'s assets."""
    from models.embedding_store import open_embedding_store

    embeddings = open_embedding_store(location)
    key = embedding_key(embeddings, backbone) if backbone.backbone is not None else None
    return Searcher(embeddings, engine, key, text_encoder(backbone, runtime))


def open_searcher(options: Any, command: str) -> tuple[Searcher, Any]:
    """A :class:`Searcher` from a command's options, and the tag store to close after."""
    from consumers.settings import StoreSettings
    from consumers.store import TagStore
    from models.library_settings import EmbeddingStoreSettings
    from models.settings import Runtime

    location = options[EmbeddingStoreSettings].location(command)
    store = TagStore(options[StoreSettings].store_url())
    try:
        return searcher_for(location, store.engine, options[SearchOptions], options[Runtime]), store
    except BaseException:
        store.close()
        raise


def register(commands: Any) -> None:
    """Add ``similar`` and ``search`` to the ``tagfleet`` subcommands."""
    from consumers.settings import StoreSettings
    from models.library_settings import EmbeddingStoreSettings
    from models.options import add_options
    from models.settings import Runtime

    groups: list[type[BaseSettings]] = [
        SearchOptions,
        EmbeddingStoreSettings,
        StoreSettings,
        Runtime,
    ]
    similar = commands.add_parser(
        "similar",
        help="the assets that look most like an asset (its stored embedding's nearest)",
        description="List the k assets of the tenant whose stored image embedding is nearest"
        " (cosine) to ASSET_ID's, best first, as JSON lines (asset_id, uri, score). No image"
        " is fetched: the embeddings are the ones the consumer stored (--embeddings).",
    )
    similar.add_argument("asset_id", metavar="ASSET_ID", help="the asset id, e.g. s3://bucket/key")
    similar.add_argument("-k", dest="k", default=None, metavar="K", help="same as --k")
    add_options(similar, groups)
    similar.set_defaults(
        handler=lambda args, options: run_search("similar", args.asset_id, options)
    )
    search = commands.add_parser(
        "search",
        help="the assets a text describes (the backbone's text tower on the stored embeddings)",
        description="Embed TEXT with the text tower of the backbone that made the stored"
        " embeddings (--backbone, --weights) and list the k nearest assets of the tenant, best"
        " first, as JSON lines (asset_id, uri, score). No image is fetched.",
    )
    search.add_argument("text", metavar="TEXT", help='what to find, e.g. "a red car on a street"')
    search.add_argument("-k", dest="k", default=None, metavar="K", help="same as --k")
    add_options(search, groups)
    search.set_defaults(handler=lambda args, options: run_search("search", args.text, options))


def run_search(kind: str, what: str, options: Any) -> int:
    """``tagfleet similar ASSET_ID`` / ``tagfleet search TEXT``: JSON lines, best first."""
    tenant, k = options[SearchOptions].tenant, options[SearchOptions].k
    try:
        searcher, store = open_searcher(options, kind)
        try:
            if kind == "similar":
                hits = searcher.similar(what, k, tenant)
            else:
                hits = searcher.text(what, k, tenant)
        finally:
            store.close()
    except (SearchError, NotFound, ValueError) as exc:
        print(f"tagfleet {kind}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for hit in hits:
        print(json.dumps(hit))
    return 0
