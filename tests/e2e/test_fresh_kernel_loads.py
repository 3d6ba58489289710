"""On real kernels: the defining kernel gets its class back; a fresh kernel gets a trainable graph."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from kernels import ensure_python3_kernelspec, error_outputs, execute_notebook, kernel_env

pytestmark = pytest.mark.slow

DEFINE_AND_PACK = [
    "import torch, nbmodelpack\nfrom torch import nn\nSCALE = 0.5",
    # a helper function and class in other cells: the stored source must carry them
    "def act(x):\n    return torch.relu(x) * SCALE",
    "class Block(nn.Module):\n    def __init__(self, n):\n        super().__init__()\n        self.l = nn.Linear(n, n)\n\n"
    "    def forward(self, x):\n        return act(self.l(x))",
    "class Net(nn.Module):\n    def __init__(self, hidden: int = 16):\n        super().__init__()\n        self.hidden = hidden\n"
    "        self.inp = nn.Linear(784, hidden)\n        self.block = Block(hidden)\n        self.drop = nn.Dropout(0.2)\n"
    "        self.out = nn.Linear(hidden, 10)\n\n    def forward(self, x):\n        return self.out(self.drop(self.block(self.inp(x.flatten(1)))))",
    "torch.manual_seed(0)\nmodel = Net(24)\ninfo = nbmodelpack.pack(model, 'nb-net', example=torch.randn(1, 1, 28, 28))",
    "loaded = nbmodelpack.load('nb-net:1')\nsrc = nbmodelpack.get_store().open('nb-net:1').plaintext('model_src.py').decode()\n"
    "x = torch.randn(3, 1, 28, 28)\ntorch.save({'x': x, 'y': model.eval()(x).detach()}, 'io.pt')\n"
    "print(json.dumps({'isinstance': isinstance(loaded, Net), 'form': loaded.bundle_form, 'src': src}))",
]

FRESH = (
    "import json, torch, nbmodelpack\n"
    "io = torch.load('io.pt', weights_only=True)\n"
    "m = nbmodelpack.load('nb-net:1')\n"
    "same = bool(torch.allclose(m(io['x']), io['y'], atol=1e-6))\n"
    "m.train(); training = m.training\n"
    "opt = torch.optim.SGD(m.parameters(), lr=0.1); w = m.out.weight.detach().clone()\n"
    "m(io['x']).pow(2).mean().backward(); opt.step()\n"
    "trusted = nbmodelpack.load('nb-net:1', trust_code=True)\n"
    "print(json.dumps({'form': m.bundle_form, 'same': same, 'training': training, 'stepped': not torch.equal(w, m.out.weight),"
    " 'trusted': [type(trusted).__name__, trusted.bundle_form, bool(torch.allclose(trusted(io['x']), io['y'], atol=1e-6))]}))"
)


def _last_json(nb) -> dict:
    outputs = [o for o in nb.cells[-1].outputs if o.get("output_type") == "stream"]
    return json.loads(outputs[-1]["text"].strip().splitlines()[-1])


def test_defining_kernel_gets_its_class_and_a_fresh_kernel_a_trainable_graph(tmp_path: Path, home: Path) -> None:
    ensure_python3_kernelspec()
    env = kernel_env(NBMODELPACK_HOME=str(home), NBMODELPACK_NO_PROGRESS="1")
    cells = [nbformat.v4.new_code_cell(c) for c in ["import json", *DEFINE_AND_PACK]]
    first = execute_notebook(nbformat.v4.new_notebook(cells=cells), cwd=tmp_path, env=env)
    assert error_outputs(first) == []
    got = _last_json(first)
    assert got["isinstance"] is True and got["form"] == "live class"
    assert "def act(x)" in got["src"] and "class Block" in got["src"] and "SCALE = 0.5" in got["src"]

    second = execute_notebook(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FRESH)]), cwd=tmp_path, env=env)
    assert error_outputs(second) == []
    fresh = _last_json(second)
    assert fresh == {"form": "graph", "same": True, "training": True, "stepped": True, "trusted": ["Net", "source", True]}
