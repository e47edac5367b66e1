"""The ``models`` package's public names stay what they are once their submodules load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_evaluate_and_train_stay_functions_after_their_submodules_load() -> None:
    code = (
        "import models.evaluate, models.train\n"  # what `tagfleet eval` / `train` do first
        "from models import evaluate, train\n"
        "from models.evaluate import evaluate as direct\n"
        "assert callable(evaluate) and callable(train) and evaluate is direct\n"
        "import sys\n"
        "assert sys.modules['models.evaluate'].evaluate is evaluate\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
