"""`make demo`: the main job end to end on the default local store.

Each issue adds its step; every step prints one line of what it did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import nbmodelpack
from nbmodelpack.pytorch.data import MNIST_PREPROCESS, accuracy, mnist_loaders

ROOT = Path(__file__).resolve().parents[1]


class DemoMLP(nn.Module):
    """Defined in __main__: packing captures it as a torch.export graph."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_tutorial_notebook() -> None:
    """Execute notebooks/01-train-and-pack.ipynb on a headless kernel (nbclient) and report it."""
    import nbformat
    from nbclient import NotebookClient

    path = ROOT / "notebooks" / "01-train-and-pack.ipynb"
    step(f"tutorial {path.relative_to(ROOT)} on a headless kernel (nbclient)")
    nb = nbformat.read(path, as_version=4)
    started = time.time()
    env = {**os.environ, "NBMODELPACK_NO_PROGRESS": "1"}
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}, extra_arguments=["--IPKernelApp.log_level=ERROR"])
    client.execute(env=env)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]
    out = ROOT / ".demo" / "01-train-and-pack.executed.ipynb"
    out.parent.mkdir(exist_ok=True)
    nbformat.write(nb, out)
    code_cells = sum(c.cell_type == "code" for c in nb.cells)
    last = next((o["text"].strip() for o in reversed(outputs) if o.get("output_type") == "stream"), "")
    print(f"{code_cells} code cells ran in {time.time() - started:.0f} s, {len(errors)} errors; last line: {last!r}; saved {out.relative_to(ROOT)}")
    if errors:
        sys.exit(f"demo failed: the tutorial raised {errors[0]}")


def main() -> None:
    torch.manual_seed(0)
    t0 = time.time()
    train, test = mnist_loaders(n_train=8000)
    model = DemoMLP()

    step("train (MNIST, 8,000 train / 2,000 held-out images) with nbmodelpack.fit")
    nbmodelpack.fit(model, train, val_loader=test, epochs=3)
    acc = accuracy(model, test)

    step("pack (the card gets fit's metrics by itself)")
    example = next(iter(test))[0][:1]
    info = nbmodelpack.pack(model, "mnist-mlp", example=example, labels=range(10), preprocess=MNIST_PREPROCESS, description="MLP on MNIST (make demo)")
    print(info)

    step("ls")
    print(nbmodelpack.commands.BundleList(nbmodelpack.ls("mnist-mlp")[:5]))

    step("load in a fresh process (which never saw DemoMLP)")
    code = (
        "import json, nbmodelpack; from nbmodelpack.pytorch.data import mnist_loaders, accuracy;"
        f"m = nbmodelpack.load({info.ref!r}); _, test = mnist_loaders(n_train=8000);"
        "print(json.dumps({'accuracy': accuracy(m, test), 'type': type(m).__name__}))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"accuracy before pack {acc:.2f}%, after load {loaded['accuracy']:.2f}% ({loaded['type']})")
    if abs(loaded["accuracy"] - acc) > 1e-9:
        sys.exit("demo failed: accuracy changed across pack/load")

    run_tutorial_notebook()

    print(f"\ndemo done in {time.time() - t0:.0f} s; store: {nbmodelpack.get_store().root}")


if __name__ == "__main__":
    import nbmodelpack.commands  # noqa: F401 - for BundleList

    main()
