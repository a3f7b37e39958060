"""The quick-start example runs end to end (with few iterations)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # subprocesses running whole scripts: `pytest -m slow`


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


def run_example(name, tmp_path, iterations=30, **environment):
    env = {**os.environ, "IMNN_EXAMPLE_ITERATIONS": str(iterations), **environment}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_npy_dataset_example_streams_memory_maps_without_tensorflow(tmp_path):
    out = run_example("npy_dataset.py", tmp_path)
    assert "built DatasetGradientIMNN" in out
    assert re.search(r"\|F\| of the IMNN summaries: [\d.]+ +analytic \|F\|: 50\.0", out)
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == [
        "derivative.npy", "fiducial.npy", "validation_derivative.npy", "validation_fiducial.npy",
    ]  # fmt: skip

