"""The FastAPI application of ``tagfleet api`` (docs/api.md).

Rules every route keeps: no valid key is 401; a key without the scope is 403; whatever is not
the key's tenant's is 404, exactly like what does not exist; every malformed input is a 4xx
naming the input; a database that cannot be reached is 503. Handlers are plain functions run
on the server's thread pool, each with its own pooled connection.
"""

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from consumers.api import queries
from consumers.api.fleet_info import fleet_functions
from consumers.api.keys import ApiKey, authenticate
from consumers.api.metrics import ApiMetrics
from consumers.api.page import REVIEW_PAGE
from consumers.api.search_routes import add_search_routes
from consumers.api.thumbnails import thumbnail
from consumers.domain import TransientError
from consumers.library_search import Searcher
from consumers.options import FUNCTION_NAME
from consumers.safe_text import MAX_ID_BYTES, MAX_SHORT_BYTES, text_problem
from consumers.store import TagStore

_AUTH = {"WWW-Authenticate": 'Bearer realm="tagfleet"'}
_NOT_FOUND = "no such asset"
_MAX_ITEM = 2**31 - 1  # review_items.item_id is a 32-bit integer


@dataclass(frozen=True)
class ApiContext:
    """What the routes share: the store, the fleet file, the limits."""

    store: TagStore
    fleet_path: str
    max_page_size: int = 200
    registry: CollectorRegistry | None = None
    search: Searcher | None = None  # similar and text search (None: off, 503)


class LabelBody(BaseModel):
    """Optional body of PUT .../labels: nothing is required."""

    note: str | None = Field(None, max_length=1000)


class ReviewAnswer(BaseModel):
    """A person's answer to a review item: confirm the proposal, reject it, or pick a label."""

    action: Literal["confirm", "reject", "relabel"]
    label: str | None = Field(
        None, min_length=1, max_length=256, description="the right label (relabel only)"
    )


def _check_text(value: str, what: str, max_bytes: int) -> str:
    problem = text_problem(value, max_bytes) or ("is empty" if not value else None)
    if problem:
        raise HTTPException(422, f"{what} {problem}")
    return value


def _check_function(value: str) -> str:
    if not FUNCTION_NAME.fullmatch(value):
        raise HTTPException(
            422, "function must be 1 to 128 of A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return value


def encode_cursor(asset_id: str) -> str:
    raw = json.dumps({"after": asset_id}, ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The asset id a cursor continues after; 400 for anything we did not write."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = json.loads(raw.decode())["after"]
    except (binascii.Error, ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise HTTPException(400, "malformed cursor: pass next_cursor as it was returned") from exc
    if not isinstance(after, str) or text_problem(after, MAX_ID_BYTES):
        raise HTTPException(400, "malformed cursor: pass next_cursor as it was returned")
    return after


def create_app(ctx: ApiContext) -> FastAPI:
    """The application over ``ctx`` (the caller owns and closes the store)."""
    app = FastAPI(
        title="tagfleet",
        version="1",
        description="Tags of your asset library: the model's tags with their provenance, a"
        " person's labels over them, the review queue. Every /v1 route takes an API key"
        " (`Authorization: Bearer tfk_...`) from `tagfleet api-key create`.",
    )
    registry = ctx.registry or CollectorRegistry()
    metrics = ApiMetrics(registry)
    engine = ctx.store.engine

    @app.exception_handler(TransientError)
    def _transient(request: Request, exc: TransientError) -> JSONResponse:
        return JSONResponse({"detail": "the store is unreachable; try again"}, status_code=503)

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Any]) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.observe(path, request.method, response.status_code, started)
        return response

    def caller(
        authorization: Annotated[str | None, Header(description="Bearer tfk_...")] = None,
        x_api_key: Annotated[str | None, Header(description="tfk_... (instead of Bearer)")] = None,
    ) -> ApiKey:
        token = x_api_key
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        key = authenticate(engine, token) if token else None
        if key is None:
            raise HTTPException(401, "a valid API key is required", headers=_AUTH)
        return key

    def scoped(scope: str) -> Callable[..., ApiKey]:
        def check(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
            if not key.may(scope):
                raise HTTPException(403, f"this key lacks the {scope!r} scope")
            return key

        return check

    Reader = Annotated[ApiKey, Depends(scoped("read"))]
    Labeller = Annotated[ApiKey, Depends(scoped("label"))]
    AssetId = Annotated[str, Path(description="the asset id, e.g. s3://bucket/key")]
    add_search_routes(app, scoped("read"), ctx.search)  # before /v1/assets/{asset_id:path}

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        try:
            ctx.store.verify_schema()
        except Exception as exc:  # any reason the store cannot serve is "not ready"
            return JSONResponse({"ready": False, "store": str(exc)[:300]}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.put("/v1/assets/{asset_id:path}/labels/{function}/{label}", tags=["labels"])
    def put_label(
        asset_id: AssetId, function: str, label: str, key: Labeller, body: LabelBody | None = None
    ) -> dict[str, Any]:
        """A person confirms or adds ``label``: it holds whatever any model says."""
        return _label(key, asset_id, function, label, "present")

    @app.delete("/v1/assets/{asset_id:path}/labels/{function}/{label}", tags=["labels"])
    def delete_label(asset_id: AssetId, function: str, label: str, key: Labeller) -> dict[str, Any]:
        """A person rejects ``label``: no model version brings it back."""
        return _label(key, asset_id, function, label, "absent")

    def _label(
        key: ApiKey,
        asset_id: str,
        function: str,
        label: str,
        decision: Literal["present", "absent"],
    ) -> dict[str, Any]:
        _check_text(asset_id, "asset_id", MAX_ID_BYTES)
        _check_function(function)
        _check_text(label, "label", MAX_SHORT_BYTES)
        done = queries.set_label(engine, key.tenant, asset_id, function, label, decision, key.name)
        if done is None:
            raise HTTPException(404, _NOT_FOUND)
        return done

    @app.get("/v1/assets/{asset_id:path}", tags=["assets"])
    def get_asset(asset_id: AssetId, key: Reader) -> dict[str, Any]:
        """Every function's current result and the effective tags with their provenance."""
        _check_text(asset_id, "asset_id", MAX_ID_BYTES)
        view = queries.asset_view(engine, key.tenant, asset_id)
        if view is None:
            raise HTTPException(404, _NOT_FOUND)
        return view

    @app.get("/v1/search", tags=["assets"])
    def search(
        key: Reader,
        label: Annotated[str, Query(description="the label to find")],
        function: Annotated[str | None, Query(description="only this function's tags")] = None,
        min_score: Annotated[float, Query(ge=0.0, le=1.0, description="AI tags only")] = 0.0,
        origin: Annotated[Literal["ai", "human", "any"], Query()] = "any",
        tenant: Annotated[str | None, Query(description="must be the key's tenant")] = None,
        limit: Annotated[int, Query(ge=1, description="page size")] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the last page")] = None,
    ) -> dict[str, Any]:
        """Assets whose effective tags hold ``label``, in asset-id order, one keyset page."""
        _check_text(label, "label", MAX_SHORT_BYTES)
        if function is not None:
            _check_function(function)
        if tenant is not None and tenant != key.tenant:
            raise HTTPException(404, "no such tenant")
        if limit > ctx.max_page_size:
            raise HTTPException(422, f"limit is at most {ctx.max_page_size}")
        after = None if cursor is None else decode_cursor(cursor)
        items = queries.search(
            engine,
            key.tenant,
            label=label,
            function=function,
            min_score=min_score,
            origin=origin,
            after=after,
            limit=limit,
        )
        more = len(items) == limit
        return {
            "items": items,
            "next_cursor": encode_cursor(items[-1]["asset_id"]) if more else None,
        }

    @app.get("/v1/functions", tags=["fleet"])
    def functions(key: Reader) -> dict[str, Any]:
        """The fleet: each function's serving version and its report's metrics."""
        return {"functions": fleet_functions(ctx.fleet_path)}

    @app.get("/v1/review", tags=["review"])
    def review(
        key: Reader,
        status: Annotated[Literal["open", "answered"], Query()] = "open",
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        after: Annotated[
            int | None, Query(ge=0, le=_MAX_ITEM, description="last item seen")
        ] = None,
    ) -> dict[str, Any]:
        """The review queue, oldest first."""
        items = queries.review_page(engine, key.tenant, status=status, after=after, limit=limit)
        return {"items": items}

    @app.post("/v1/review/{item}", tags=["review"])
    def answer(
        item: Annotated[int, Path(ge=0, le=_MAX_ITEM)], body: ReviewAnswer, key: Labeller
    ) -> dict[str, Any]:
        """Answer an item: confirm the proposal, reject it, or relabel (reject the proposal,
        add ``label``). The labels go to the human labels, as with PUT/DELETE."""
        current = queries.review_item(engine, key.tenant, item)
        if current is None:
            raise HTTPException(404, "no such review item")
        labels = _review_labels(current, body)
        done = queries.answer_review(engine, key.tenant, item, body.model_dump(), labels, key.name)
        if done is None:
            raise HTTPException(404, "no such review item")
        return done

    @app.get("/v1/review/{item}/image", tags=["review"])
    def review_image(item: Annotated[int, Path(ge=0, le=_MAX_ITEM)], key: Reader) -> Response:
        """A JPEG thumbnail of the item's image, proxied (the bucket stays private)."""
        current = queries.review_item(engine, key.tenant, item)
        if current is None:
            raise HTTPException(404, "no such review item")
        return Response(thumbnail(current["uri"]), media_type="image/jpeg")

    @app.get("/review", include_in_schema=False)
    def review_page() -> HTMLResponse:
        return HTMLResponse(REVIEW_PAGE)

    return app


def _review_labels(
    item: dict[str, Any], body: ReviewAnswer
) -> list[tuple[str, Literal["present", "absent"]]]:
    proposal = item["label"]
    if body.action == "relabel":
        if body.label is None:
            raise HTTPException(422, "relabel needs a label")
        _check_text(body.label, "label", MAX_SHORT_BYTES)
        out: list[tuple[str, Literal["present", "absent"]]] = [(body.label, "present")]
        if proposal is not None and proposal != body.label:
            out.append((proposal, "absent"))
        return out
    if proposal is None:
        raise HTTPException(422, "this item has no proposal to confirm or reject; relabel it")
    return [(proposal, "present" if body.action == "confirm" else "absent")]
