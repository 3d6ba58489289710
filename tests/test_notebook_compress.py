"""notebooks/02-compress.ipynb runs top to bottom in a real kernel without an error."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

import nbmodelpack

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02-compress.ipynb"


def test_compress_notebook_runs_and_picks_a_tagged_version():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any("data:image/png;base64," in h and "<table " in h for h in html)  # report: table + chart
    small = nbmodelpack.show("mnist-mlp:small")
    assert small.recipe["op"] == "compress" and small.metrics["compression"]["size_ratio"] > 3.9
