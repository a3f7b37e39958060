"""Every notebook in examples/notebooks runs in its small setting and prints figures close to the analytic ones.

The notebooks are stored as jupytext ``py:percent`` scripts paired with ``.ipynb`` files; each test
checks the pair is in sync, executes the notebook in a fresh kernel (nbclient) and reads its output.
"""

import re
from pathlib import Path

import jupytext
import nbclient
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
PER_CLASS = [
    "simulator", "gradient", "numerical", "aggregated_simulator", "aggregated_gradient", "aggregated_numerical",
    "dataset_gradient", "dataset_numerical",
]  # fmt: skip


def execute(name, tmp_path):
    """Run ``name`` and return (its text output, the number of images it drew)."""
    script = jupytext.read(NOTEBOOKS / f"{name}.py")
    paired = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    assert [c.source for c in script.cells] == [c.source for c in paired.cells], f"{name}.ipynb is out of sync"
    client = nbclient.NotebookClient(
        script, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [output for cell in script.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    text += "".join(o.get("data", {}).get("text/plain", "") for o in outputs if o.output_type == "execute_result")
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    return text, images


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.py")) == sorted(PER_CLASS)


@pytest.mark.parametrize("name", PER_CLASS)
def test_class_notebook_reaches_the_analytic_fisher_information(name, tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel inherits it; notebooks draw inline
    text, images = execute(name, tmp_path)
    assert "analytic |F| = 50.0" in text
    detF = float(re.search(r"\|F\| of the summaries on 10 000 new simulations: ([\d.]+)", text).group(1))
    # 300 iterations of a small network: well on the way to, and never above, the analytic 50
    assert 25 < detF < 52, detF
    assert images >= 1
