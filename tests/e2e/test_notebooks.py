"""Notebooks on real kernels (nbclient): the tutorial, and a notebook-defined class across kernels."""

from __future__ import annotations

import json
from pathlib import Path

import kernels
import nbformat
import pytest
from kernels import error_outputs, execute_notebook, kernel_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def executed_tutorial(tmp_path_factory: pytest.TempPathFactory):
    """The tutorial executed on a real kernel (once per session, shared with the other e2e module)."""
    return kernels.executed_tutorial(tmp_path_factory.getbasetemp())


def _outputs(nb, source_start: str) -> list[dict]:
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.lstrip().startswith(source_start)]
    assert len(cells) == 1, source_start
    return list(cells[0].outputs)


def test_tutorial_runs_on_a_real_kernel_without_errors(executed_tutorial) -> None:
    nb, home, saved = executed_tutorial
    assert error_outputs(nb) == []
    # the dashboard ends as static output: header + bar, curves, summary table
    fit = _outputs(nb, "history = nbmodelpack.fit")
    kinds = [sorted(o.get("data", {})) for o in fit]
    assert kinds[:3] == [["text/html", "text/plain"], ["image/png", "text/plain"], ["text/html", "text/plain"]]
    assert "<progress" in fit[0]["data"]["text/html"] and "done" in fit[0]["data"]["text/html"]
    assert "val_accuracy" in fit[2]["data"]["text/html"] and "2 epochs in" in fit[2]["data"]["text/plain"]
    pack = _outputs(nb, "digits = list(range(10))")
    card = next(o for o in pack if "text/html" in o.get("data", {}))
    assert 'class="nbmp nbmp-card"' in card["data"]["text/html"] and "val_accuracy" in card["data"]["text/html"]
    assert card["data"]["text/plain"].startswith("mnist-mlp:1")
    listing = _outputs(nb, "%modelpack ls")[0]["data"]
    assert "%modelpack load mnist-mlp:1" in listing["text/html"] and listing["text/plain"].startswith("REF")
    loaded = _outputs(nb, "del model, DigitMLP")[0]["data"]["text/plain"]
    assert loaded.startswith("loaded mnist-mlp:1 as `classifier`")
    grid = _outputs(nb, "import matplotlib.pyplot")
    assert any("image/png" in o.get("data", {}) for o in grid)
    right = int(next(o["text"] for o in grid if o.get("output_type") == "stream").split()[0])
    assert right >= 9  # a 2-epoch MLP gets most of 12 held-out digits
    # the bundle is really in the store, with the fit's metrics on its card
    store = (home / "store" / "index.json").read_text()
    assert "mnist-mlp" in store and saved.is_file()


CELL_A = [
    "%load_ext nbmodelpack\nimport json, torch\nfrom torch import nn\nimport nbmodelpack\ntorch.manual_seed(0)",
    # a class that exists only in this kernel's __main__
    "class Scorer(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.body = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))\n"
    "    def forward(self, x):\n        return self.body(x).softmax(-1)\n\nmodel = Scorer()",
    "x = torch.randn(64, 6)\ny = x[:, :3].argmax(1)\nloader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)\n"
    "history = nbmodelpack.fit(model, loader, epochs=2, loss=lambda out, t: nn.functional.nll_loss(out.log(), t))",
    "example = x[:1]\n%modelpack pack model --name scorer --example example",
    "probe = torch.linspace(-2, 2, 30).reshape(5, 6)\nwith torch.no_grad():\n    expected = model(probe)\n"
    "json.dump({'probe': probe.tolist(), 'expected': expected.tolist()}, open('expected.json', 'w'))",
]
CELL_B = [
    "%load_ext nbmodelpack\nimport json, torch",
    "assert 'Scorer' not in globals()\n%modelpack load scorer:latest",
    "data = json.load(open('expected.json'))\nwith torch.no_grad():\n    got = scorer(torch.tensor(data['probe']))\n"
    "json.dump({'got': got.tolist(), 'kind': type(scorer).__name__}, open('got.json', 'w'))",
    # user errors in a real kernel: one line each, and the cell fails (so "Run all" stops)
    "%modelpack load nothing:1 as gone",
    "%modelpack bogus",
]


def test_notebook_class_packed_in_one_kernel_loads_in_another_and_predicts_the_same(tmp_path: Path, home: Path) -> None:
    kernels.ensure_python3_kernelspec()
    env = kernel_env(NBMODELPACK_HOME=str(home), NBMODELPACK_NO_PROGRESS="1")
    a = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELL_A])
    execute_notebook(a, cwd=tmp_path, env=env, timeout=180)
    assert error_outputs(a) == []
    b = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELL_B])
    execute_notebook(b, cwd=tmp_path, env=env, timeout=180, allow_errors=True)
    assert error_outputs(b) == ["ModelPackMagicError: bundle not found: nothing:1 (run `modelpack ls` to see what exists)"]
    missing, bogus = b.cells[-2].outputs, b.cells[-1].outputs
    assert [o["traceback"] for o in missing] == [["error: bundle not found: nothing:1 (run `modelpack ls` to see what exists)"]]
    assert [(o["output_type"], o["name"]) for o in bogus] == [("stream", "stderr")]
    assert bogus[0]["text"].startswith("UsageError: unknown verb 'bogus'") and bogus[0]["text"].count("\n") == 1
    expected = json.loads((tmp_path / "expected.json").read_text())["expected"]
    got = json.loads((tmp_path / "got.json").read_text())
    assert got["got"] == expected  # bit-identical: same weights, same graph
    import nbmodelpack

    assert nbmodelpack.show("scorer:1").architecture["strategy"] == "export"
    assert nbmodelpack.show("scorer:1").metrics["epochs"] == 2
