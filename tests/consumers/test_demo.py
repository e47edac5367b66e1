"""The README's main job: ``tagfleet demo`` on the local stack prints the tags it stored."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, read_topic

pytestmark = pytest.mark.integration


def test_demo_trains_its_fleet_tags_its_images_and_prints_them(
    stack, kafka_bootstrap, tmp_path: Path
):
    workdir = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumers.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--images",
            "8",
            "--bootstrap-servers",
            kafka_bootstrap,
        ],
        cwd=REPO,
        env={**os.environ, **stack},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert "stored 8, dead-lettered 1" in out
    # the tags came from the gateway's own notifications: on the demo's topic, every record
    # but the one malformed event is the gateway's (its start-up TestEvent, 8 uploads, 1 delete)
    found = re.search(r"notifications to (tagfleet-demo-\S+) ", out)
    assert found, out
    values = [r.value for r in read_topic(kafka_bootstrap, found.group(1), expected=11)]
    assert values.count(b"{not json") == 1 and len(values) == 11, values
    documents = [json.loads(v) for v in values if v != b"{not json"]
    assert sum(d.get("Event") == "s3:TestEvent" for d in documents) == 1
    records = [r for d in documents for r in d.get("Records", [])]
    assert all("PrincipalId" in r["userIdentity"] for r in records)  # VersityGW's mark
    names = sorted(r["eventName"] for r in records)
    assert names == ["s3:ObjectCreated:Put"] * 8 + ["s3:ObjectRemoved:Delete"], names
    # then one picture was deleted and its tags are gone
    assert re.search(r"^removed 1: .* now has no tags$", out, re.M), out
    rows = [line for line in out.splitlines() if line.startswith("s3://tagfleet-demo/")]
    assert len(rows) == 8
    held_out = [float(m) for m in re.findall(r"held-out: \w+ ([0-9.]+)", out)]
    assert len(held_out) == 2 and min(held_out) >= 0.8, out
    # columns: asset (50), truth (14), colour (18), colours
    truths = [row[51:65].strip().split("+") for row in rows]
    classified = [row[66:84].split()[0] for row in rows]
    tagged = [set(re.findall(r"(red|green|blue|yellow) [0-9.]+", row[85:])) for row in rows]
    assert sum(c in t for c, t in zip(classified, truths, strict=True)) >= 6, out
    assert sum(set(t) <= g for t, g in zip(truths, tagged, strict=True)) >= 6, out
    assert (workdir / "fleet" / "fleet.yaml").exists()
