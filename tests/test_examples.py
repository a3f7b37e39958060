"""The quick-start example runs end to end (with few iterations)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_and_writes_the_history_plot(tmp_path):
    output = tmp_path / "history.png"
    env = {**os.environ, "IMNN_QUICKSTART_ITERATIONS": "60", "IMNN_QUICKSTART_OUTPUT": str(output)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"\|F\| of the IMNN summaries: [\d.]+ +analytic \|F\|: 50\.0", run.stdout)
    assert "quasi-MLE" in run.stdout
    assert output.stat().st_size > 10_000
