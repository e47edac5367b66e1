"""infra/Dockerfile and .dockerignore, read as text (no Docker engine here): the structure the
issue asks for, and that what the image runs exists in this repository."""

from __future__ import annotations

import json
import re
import tomllib

from deploy_helpers import REPO, cli_parses, settings_fields

DOCKERFILE = REPO / "infra" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in instructions():
        if word == "FROM":
            current = rest.split(" AS ")[-1] if " AS " in rest else rest
            result[current] = []
        elif current:
            result[current].append((word, rest))
    return result


def runtime_instructions() -> dict[str, str]:
    """The shared runtime stage (both variants add only ENV to it), last one of each kind."""
    return dict(stages()["runtime-base"])


def test_variants_cuda_and_cpu_selected_by_build_arg() -> None:
    first = instructions()[0]
    assert first == ("ARG", "VARIANT=cuda")
    all_stages = stages()
    assert {"build", "runtime-base", "runtime-cuda", "runtime-cpu", "runtime"} <= set(all_stages)
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert froms[-1] == "runtime-${VARIANT} AS runtime"  # the last stage is the default target
    build = " ".join(rest for _, rest in all_stages["build"])
    assert "cuda)" in build and "cpu)" in build and "download.pytorch.org/whl/cpu" in build
    assert "NVIDIA_VISIBLE_DEVICES" in dict(all_stages["runtime-cuda"]).get("ENV", "")


def test_runs_as_a_numeric_non_root_user() -> None:
    user = runtime_instructions()["USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0


def test_exec_form_entrypoint_runs_consume_by_default() -> None:
    runtime = runtime_instructions()
    assert json.loads(runtime["ENTRYPOINT"]) == ["tagfleet"]
    cmd = json.loads(runtime["CMD"])
    assert cmd == ["consume"]
    assert cli_parses(cmd).handler.__name__ == "_run_consume"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "tagfleet" in scripts
    assert runtime["STOPSIGNAL"] == "SIGTERM"


def test_weights_cache_volume_and_health_check() -> None:
    runtime = runtime_instructions()
    assert json.loads(runtime["VOLUME"]) == ["/var/cache/tagfleet"]
    assert "TAGFLEET_CACHE_DIR=/var/cache/tagfleet" in runtime["ENV"]
    assert "/healthz" in runtime["HEALTHCHECK"] and "CMD [" in runtime["HEALTHCHECK"]
    port = settings_fields()["metrics_port"].default
    assert runtime["EXPOSE"] == str(port)
    assert f"TAGFLEET_METRICS_PORT={port}" in runtime["ENV"]


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    lines = [
        ln
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    admitted = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "consumers", "models"} <= admitted
    for name in admitted:
        assert (REPO / name).exists() or name in ("README.md", "LICENSE"), name
    copies = [rest for word, rest in instructions() if word == "COPY" and "--from" not in rest]
    assert copies == ["constraints.txt /src/constraints.txt", ". /src"]


def test_every_pip_install_uses_the_constraints_file_and_torch_is_exact() -> None:
    installs = [rest for word, rest in instructions() if word == "RUN" and "pip install" in rest]
    assert installs and all("-c /src/constraints.txt" in rest for rest in installs)
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for name in ("torch", "torchvision", "open_clip_torch"):
        assert pins[name][0].isdigit(), name
    setup = (REPO / "infra" / "setup.sh").read_text()
    assert "-c constraints.txt" in setup or '-c "$REPO_ROOT/constraints.txt"' in setup


def test_oci_labels_and_minimum_driver() -> None:
    runtime = runtime_instructions()
    for key in ("title", "version", "revision", "created", "source", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in runtime["LABEL"], key
    cuda = dict(stages()["runtime-cuda"])
    assert "NVIDIA_REQUIRE_CUDA" in cuda["ENV"] and "min-driver" in cuda["LABEL"]
