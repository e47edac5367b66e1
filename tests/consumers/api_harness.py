"""Helpers for the tags API tests: ``tagfleet api`` in a child process on the real store, keys
made with ``tagfleet api-key create``, and an HTTP client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from harness import REPO, free_port, wait_until


def tagfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``tagfleet ARGS`` with ``env`` over the current environment."""
    return subprocess.run(
        [sys.executable, "-m", "consumers.cli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def make_key(store_url: str, tenant: str, scopes: str, name: str = "") -> str:
    """A new API key (the command's stdout)."""
    done = tagfleet(
        {"TAGFLEET_STORE": store_url},
        "api-key",
        "create",
        "--tenant",
        tenant,
        "--scopes",
        scopes,
        *(["--name", name] if name else []),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class ApiProcess:
    """``tagfleet api`` on a free port, JSON logs in a file; ready once /readyz says so."""

    def __init__(
        self, log_path: Path, store_url: str, fleet: Path | str = "fleet.yaml", **env: str
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumers.cli", "api", "--port", str(self.port)],
            cwd=REPO,
            env={
                **os.environ,
                "TAGFLEET_STORE": store_url,
                "TAGFLEET_FLEET": str(fleet),
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, 60, 0.2, "the API's /readyz")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"tagfleet api exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(self.base + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        finally:
            self._log.close()


def asset_path(asset_id: str) -> str:
    """The path of an asset (its id percent-encoded, slashes included)."""
    from urllib.parse import quote

    return "/v1/assets/" + quote(asset_id, safe="")


def label_path(asset_id: str, function: str, label: str) -> str:
    from urllib.parse import quote

    return f"{asset_path(asset_id)}/labels/{quote(function, safe='')}/{quote(label, safe='')}"


def json_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()
