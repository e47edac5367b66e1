"""GET /v1/search on a store of 1,000,000 tag rows in PostgreSQL, next to the same query in
plain SQL (issue 18; docs/benchmarks.md, "Search").

Generates ``--assets`` assets (tenant ``acme``) with ``--tags-per-asset`` tags each (function
``colours``, 50 labels, uniform scores) in a fresh database of the local stack's PostgreSQL
with ``INSERT ... SELECT generate_series`` (seconds, no Python per row), starts
``tagfleet api`` on it and measures, for random labels at ``min_score=0.5``:

- the latency of single requests (p50, p95) for the first page and for a page deep inside
  (a cursor at a random asset), ``limit=50``;
- requests per second with ``--clients`` concurrent clients;
- the same keyset query sent to PostgreSQL directly (psycopg, one connection): p50, p95;
- its plans (``EXPLAIN (ANALYZE, BUFFERS)``) for a first page and a page at the middle asset,
  and the machine's load average at the start and the end (the figures depend on it).

    python -m benchmarks.api_search [--assets 200000] [--tags-per-asset 5] [--requests 400]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
LABELS = [f"label-{i:02d}" for i in range(50)]


def stack_env() -> dict[str, str]:
    out = subprocess.run(
        [str(REPO / "infra" / "stack.sh"), "env"], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"^export ([A-Z0-9_]+)=(.*)$", out, flags=re.M))


def generate(url: str, assets: int, per_asset: int) -> float:
    """Fill the store; returns the seconds it took."""
    from consumers.store import TagStore

    store = TagStore(url)
    store.upgrade()
    started = time.perf_counter()
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO assets (asset_id, uri, etag, width, height, removed, updated_at, tenant)"
            " SELECT 's3://bench/' || lpad(i::text, 8, '0') || '.jpg',"
            " 's3://bench/' || lpad(i::text, 8, '0') || '.jpg', 'e', 4000, 3000, false, now(),"
            " 'acme' FROM generate_series(1, %(n)s) AS i",
            {"n": assets},
        )
        conn.exec_driver_sql(
            "INSERT INTO function_results (asset_id, function, type, model_version, etag, result,"
            " processed_at, stored_at) SELECT asset_id, 'colours', 'tags', 'v1', 'e', '{}'::jsonb,"
            " now(), now() FROM assets"
        )
        # per asset, per_asset distinct labels: label (i * 7 + k * 11) mod 50
        conn.exec_driver_sql(
            "INSERT INTO tags (asset_id, function, label, ordinal, score, threshold,"
            " model_version, created_at)"
            " SELECT 's3://bench/' || lpad(i::text, 8, '0') || '.jpg', 'colours',"
            " 'label-' || lpad(((i * 7 + k * 11) %% 50)::text, 2, '0'), 0,"
            " random(), 0.3, 'v1', now()"
            " FROM generate_series(1, %(n)s) AS i, generate_series(0, %(k)s - 1) AS k",
            {"n": assets, "k": per_asset},
        )
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    store.close()
    return time.perf_counter() - started


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
        "mean_ms": round(1000 * statistics.fmean(ordered), 2),
    }


def cursor_for(asset_id: str) -> str:
    from consumers.api.app import encode_cursor

    return encode_cursor(asset_id)


def params(rng: random.Random, assets: int, deep: bool) -> dict[str, Any]:
    p: dict[str, Any] = {
        "label": rng.choice(LABELS),
        "function": "colours",
        "min_score": 0.5,
        "origin": "ai",
        "limit": 50,
    }
    if deep:
        p["cursor"] = cursor_for(f"s3://bench/{rng.randint(1, assets):08d}.jpg")
    return p


def measure_api(base: str, key: str, assets: int, requests: int, clients: int) -> dict[str, Any]:
    rng = random.Random(1)
    headers = {"Authorization": f"Bearer {key}"}
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        for _ in range(20):  # warm-up: connections, plans, caches
            http.get("/v1/search", params=params(rng, assets, False)).raise_for_status()
        for name, deep in (("first_page", False), ("deep_page", True)):
            samples = []
            for _ in range(requests):
                p = params(rng, assets, deep)
                started = time.perf_counter()
                response = http.get("/v1/search", params=p)
                samples.append(time.perf_counter() - started)
                response.raise_for_status()
                assert deep or len(response.json()["items"]) == 50
            out[name] = percentiles(samples)
    done = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + 10

    def client(seed: int) -> None:
        r = random.Random(seed)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            while time.perf_counter() < deadline:
                http.get("/v1/search", params=params(r, assets, r.random() < 0.5))
                with lock:
                    done[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["requests_per_s"] = round(done[0] / (time.perf_counter() - started), 1)
    out["clients"] = clients
    return out


def measure_sql(url: str, assets: int, requests: int) -> dict[str, Any]:
    """The API's keyset query, sent as SQL text on one connection."""
    from consumers.api import queries
    from consumers.store.engine import create_store_engine

    engine = create_store_engine(url)
    rng = random.Random(2)
    out: dict[str, Any] = {}
    for name, deep in (("first_page", False), ("deep_page", True)):
        samples = []
        for _ in range(requests):
            p = params(rng, assets, False)
            after = f"s3://bench/{rng.randint(1, assets):08d}.jpg" if deep else None
            started = time.perf_counter()
            rows = queries.search(
                engine,
                "acme",
                label=p["label"],
                function="colours",
                min_score=0.5,
                origin="ai",
                after=after,
                limit=50,
            )
            samples.append(time.perf_counter() - started)
            assert len(rows) == 50 or deep
        out[name] = percentiles(samples)
    # the plans of a first page and of a page in the middle of the keyset
    middle = f"s3://bench/{assets // 2:08d}.jpg"
    for name, after in (("plan", None), ("plan_deep_page", middle)):
        query = queries.search_query(
            "acme",
            label="label-07",
            function="colours",
            min_score=0.5,
            origin="ai",
            after=after,
            limit=50,
        )
        compiled = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
        with engine.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}").scalars().all()
        out[name] = list(plan)
    engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=int, default=200_000, help="assets (default 200000)")
    ap.add_argument("--tags-per-asset", type=int, default=5, help="tags each (default 5)")
    ap.add_argument("--requests", type=int, default=400, help="timed requests per kind")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients for req/s")
    args = ap.parse_args(argv)
    env = stack_env()
    admin = env["TAGFLEET_TEST_PG_URL"]
    name = f"bench_search_{os.getpid()}"
    admin_engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
    api = None
    try:
        seconds = generate(url, args.assets, args.tags_per_asset)
        from consumers.api.keys import create_key
        from consumers.store.engine import create_store_engine

        engine = create_store_engine(url)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM tags").scalar_one()
        key = create_key(engine, "acme", ("read",), "bench")
        engine.dispose()
        port = 18000 + os.getpid() % 1000
        api = subprocess.Popen(
            [sys.executable, "-m", "consumers.cli", "api", "--port", str(port)],
            cwd=REPO,
            env={**os.environ, **env, "TAGFLEET_STORE": url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        result = {
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "tag_rows": rows,
            "assets": args.assets,
            "generate_s": round(seconds, 1),
            "api": measure_api(base, key, args.assets, args.requests, args.clients),
            "sql": measure_sql(url, args.assets, args.requests),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        print(json.dumps(result, indent=2))
        out = REPO / "var" / "bench" / "results" / "api_search.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    finally:
        if api is not None:
            api.terminate()
            api.wait(30)
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
