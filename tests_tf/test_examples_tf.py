"""The TFRecords example runs end to end (with few iterations)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tfrecords_example_writes_shards_and_fits_from_them(tmp_path):
    env = {**os.environ, "IMNN_EXAMPLE_ITERATIONS": "30"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tfrecords.py"), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "built DatasetGradientIMNN" in run.stdout
    assert re.search(r"\|F\| of the IMNN summaries: [\d.]+ +analytic \|F\|: 50\.0", run.stdout)
    names = {p.name.rsplit("_", 1)[0] for p in tmp_path.glob("*.tfrecords")}
    assert names == {"fiducial", "derivative", "validation_fiducial", "validation_derivative"}
    assert len(list(tmp_path.glob("fiducial_*.tfrecords"))) > 1
