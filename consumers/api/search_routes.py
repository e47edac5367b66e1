"""The API's search on stored embeddings: ``GET /v1/assets/{id}/similar`` and
``GET /v1/search/text`` (:mod:`consumers.library_search` does the work).

The rules of every route hold: the key's tenant only (an asset of another tenant is 404 like
one never stored, and no hit of another tenant is listed), malformed input is a 4xx naming it,
a search the server was not started for (no ``--embeddings``, no ``--backbone`` for text) is
503 with what to set.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query
from pydantic import BaseModel

from consumers.api.keys import ApiKey
from consumers.library_search import MAX_K, NotFound, Searcher, SearchError, SearchUnavailable
from consumers.safe_text import MAX_ID_BYTES, MAX_SHORT_BYTES, text_problem


class Hit(BaseModel):
    """One asset found, best first."""

    asset_id: str
    uri: str
    score: float  # cosine similarity of the embeddings, -1..1


class Hits(BaseModel):
    items: list[Hit]


def _check(value: str, what: str, max_bytes: int) -> None:
    problem = text_problem(value, max_bytes) or ("is empty" if not value.strip() else None)
    if problem:
        raise HTTPException(422, f"{what} {problem}")


def _searcher(searcher: Searcher | None) -> Searcher:
    if searcher is None:
        raise HTTPException(
            503, "search is off: start tagfleet api with --embeddings (and --backbone for text)"
        )
    return searcher


def add_search_routes(
    app: FastAPI, reader: Callable[..., ApiKey], searcher: Searcher | None
) -> None:
    """Register the two routes on ``app``; ``reader``: the dependency that authenticates a key
    with the read scope. Register them before ``GET /v1/assets/{asset_id:path}``."""
    Reader = Annotated[ApiKey, Depends(reader)]

    @app.get("/v1/assets/{asset_id:path}/similar", tags=["search"], response_model=Hits)
    def similar(
        asset_id: Annotated[str, Path(description="the asset id, e.g. s3://bucket/key")],
        key: Reader,
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many, best first")] = 20,
    ) -> dict[str, Any]:
        """The ``k`` assets of the key's tenant that look most like this one: nearest by their
        stored image embeddings (cosine), the asset itself left out."""
        _check(asset_id, "asset_id", MAX_ID_BYTES)
        found = _searcher(searcher)
        try:
            return {"items": found.similar(asset_id, k, key.tenant)}
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except SearchUnavailable as exc:
            raise HTTPException(503, str(exc)) from exc
        except SearchError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.get("/v1/search/text", tags=["search"], response_model=Hits)
    def text(
        key: Reader,
        q: Annotated[str, Query(description='what to find, e.g. "a red car on a street"')],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many, best first")] = 20,
    ) -> dict[str, Any]:
        """The ``k`` assets of the key's tenant that the text describes best: the backbone's
        text tower embeds ``q`` next to the stored image embeddings (cosine)."""
        _check(q, "q", MAX_SHORT_BYTES)
        found = _searcher(searcher)
        if found.text_encoder is None:
            raise HTTPException(503, "text search is off: start tagfleet api with --backbone")
        try:
            return {"items": found.text(q, k, key.tenant)}
        except SearchUnavailable as exc:
            raise HTTPException(503, str(exc)) from exc
        except SearchError as exc:
            raise HTTPException(422, str(exc)) from exc
