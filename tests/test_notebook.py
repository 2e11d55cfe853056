"""notebooks/decode_demo.ipynb runs on the tiny world and its outputs show decoded results.

With nbclient/nbformat/ipykernel installed the notebook is executed as a notebook (outputs,
figures). Without them, its code cells are run in order as one script in a fresh interpreter,
so the notebook's code is still exercised by the suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from .conftest import REPO

NOTEBOOK = REPO / "notebooks/decode_demo.ipynb"
DECODED = re.compile(
    r"DECODED top-1 brain->image ([0-9.]+) image->brain ([0-9.]+) chance ([0-9.]+)"
)


def _environment(tiny_nsd, work) -> dict[str, str]:
    return {
        **os.environ,
        "NEURODECODE_NOTEBOOK_DATA": str(tiny_nsd),
        "NEURODECODE_NOTEBOOK_WORK": str(work),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def _check_decoded(text: str) -> None:
    match = DECODED.search(text)
    assert match, f"the notebook printed no retrieval result:\n{text[-2000:]}"
    brain_to_image, image_to_brain, chance = map(float, match.groups())
    assert chance == pytest.approx(1 / 60, abs=1e-3)
    # planted signal: well above chance (the oracle is the ceiling; chance is 0.017)
    assert brain_to_image > 3 * chance and image_to_brain > 3 * chance, match.group(0)
    ceiling = re.search(r"correlation with the planted ceiling r = ([0-9.-]+)", text)
    assert ceiling and float(ceiling.group(1)) > 0.8, "noise-ceiling map does not match the truth"


def test_notebook_is_a_valid_v4_notebook_without_stored_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] for c in code), "commit the notebook without outputs"
    source = "".join("".join(c["source"]) for c in code)
    for needed in ("neurodecode.load_pretrained", "plot_retrieval_examples", "plot_volume_mosaic"):
        assert needed in source


def test_notebook_executes_with_nbclient(tiny_nsd, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    for key, value in _environment(tiny_nsd, tmp_path).items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute(cwd=str(tmp_path))
    text, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            data = output.get("data", {})
            text.append(data.get("text/plain", ""))
            images += "image/png" in data
    _check_decoded("\n".join(text))
    assert images >= 2, "the retrieval figure and the brain map were not displayed"


def test_notebook_code_runs_as_a_script(tiny_nsd, tmp_path):
    if importlib.util.find_spec("nbclient") and importlib.util.find_spec("ipykernel"):
        pytest.skip("executed as a notebook by test_notebook_executes_with_nbclient")
    notebook = json.loads(NOTEBOOK.read_text())
    script = tmp_path / "decode_demo.py"
    code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    lines = "\n\n".join(code).splitlines()
    script.write_text("\n".join(line for line in lines if not line.startswith("%")))  # magics
    done = subprocess.run(
        [sys.executable, str(script)],
        env=_environment(tiny_nsd, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _check_decoded(done.stdout)
    assert (tmp_path / "retrieval.png").stat().st_size > 0
    assert (tmp_path / "noise_ceiling.png").stat().st_size > 0
    assert (tmp_path / "decoder/model.safetensors").is_file()
