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


def test_lfi_example_compares_every_method_with_the_exact_posterior(tmp_path):
    out = run_example("lfi_mean_and_variance.py", tmp_path, IMNN_EXAMPLE_QUICK="1")
    assert (tmp_path / "lfi_mean_and_variance.png").stat().st_size > 20_000
    rows = re.findall(r"(exact|ABC|PMC|flow): μ = ([-+\d.]+) ± ([\d.]+)   Σ = ([\d.]+) ± ([\d.]+)", out)
    assert len(rows) == 3 * 4
    for target in range(3):
        (_, *exact), *methods = [[name, *map(float, values)] for name, *values in rows[4 * target : 4 * target + 4]]
        for name, μ, σ_μ, Σ, σ_Σ in methods:  # small budgets: means within 0.6 σ, σ within ±50 % of exact
            assert abs(μ - exact[0]) < 0.6 * exact[1] and abs(Σ - exact[2]) < 0.6 * exact[3], (name, target)
            assert 0.5 < σ_μ / exact[1] < 1.5 and 0.5 < σ_Σ / exact[3] < 1.5, (name, target)
