"""The local stack as the benchmarks see it: its environment and an S3 client on it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def stack_env() -> dict[str, str]:
    """The local stack's variables (``infra/stack.sh env``), also set in ``os.environ``."""
    out = subprocess.run(
        [str(REPO / "infra" / "stack.sh"), "env"], capture_output=True, text=True, check=True
    ).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip().strip("'\"")
    for name, value in env.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in env}


def s3_client() -> Any:
    import boto3

    stack_env()
    return boto3.session.Session().client("s3")
