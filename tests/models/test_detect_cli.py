"""``tagfleet train --type detect`` and ``tagfleet eval`` on a generated COCO dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from detect_data import coco_scenes

TAGFLEET = str(Path(sys.executable).parent / "tagfleet")


def _run(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [TAGFLEET, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the tagfleet command in a fresh process: tens of seconds
def test_train_and_eval_detect_from_the_command_line(tiny_config: str, tmp_path: Path) -> None:
    data = str(coco_scenes(tmp_path / "data", 16, seed=0, width=96, height=72))
    out = tmp_path / "logos"
    trained = _run(
        "train",
        data,
        "--type",
        "detect",
        "--name",
        "logos",
        "--out",
        str(out),
        "--backbone",
        tiny_config,
        "--mode",
        "finetune",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--backbone-lr",
        "1e-3",
    )
    assert set(trained["metrics"]) == {"map50", "map50_95"}
    for name in (
        "manifest.json",
        "head.safetensors",
        "backbone.safetensors",
        "report.json",
        "report.md",
        "pr_red.png",
        "pr_blue.png",
    ):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["type"] == "detect" and set(manifest["thresholds"]) == {"red", "blue"}
    report = json.loads((out / "report.json").read_text())
    assert {"map50", "map50_95"} <= set(report["metrics"])
    assert set(report["metrics"]["per_label"]["red"]) >= {"ap50", "ap50_95", "precision"}
    assert "AP50" in (out / "report.md").read_text()

    evaluated = _run("eval", str(out), data, "--out", str(tmp_path / "eval"))
    assert evaluated["version"] == trained["version"]
    assert 0.0 <= evaluated["metrics"]["map50_95"] <= evaluated["metrics"]["map50"] <= 1.0
    assert (tmp_path / "eval" / "report.json").exists()
