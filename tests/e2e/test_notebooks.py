"""Notebooks on real kernels (nbclient): the tutorial, and a notebook-defined class across kernels."""

from __future__ import annotations

import contextlib
import json
import queue
import time
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
    assert 'class="nbmp nbmp-card"' in card["data"]["text/html"] and "validation metrics" in card["data"]["text/html"]
    assert card["data"]["text/plain"].startswith("mnist-mlp:1")
    listing = _outputs(nb, "%modelpack ls")[0]["data"]
    assert "%modelpack load mnist-mlp:1" in listing["text/html"] and listing["text/plain"].startswith("REF")
    loaded = _outputs(nb, "del model, DigitMLP")[0]["data"]["text/plain"]
    assert loaded.startswith("loaded mnist-mlp:1 as classifier")
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
    errors = error_outputs(b)  # the magic's own spelling, one `error:` prefix for every user error
    assert errors[0] == "ModelPackMagicError: bundle not found: nothing:1 (run `%modelpack ls` to see what exists)"
    assert len(errors) == 2 and errors[1].startswith("ModelPackMagicError: unknown verb 'bogus'")
    missing, bogus = b.cells[-2].outputs, b.cells[-1].outputs
    assert [o["traceback"] for o in missing] == [["error: bundle not found: nothing:1 (run `%modelpack ls` to see what exists)"]]
    assert len(bogus) == 1 and bogus[0]["traceback"][0].startswith("error: unknown verb 'bogus'") and "\n" not in bogus[0]["traceback"][0]
    expected = json.loads((tmp_path / "expected.json").read_text())["expected"]
    got = json.loads((tmp_path / "got.json").read_text())
    assert got["got"] == expected  # bit-identical: same weights, same graph
    import nbmodelpack

    assert nbmodelpack.show("scorer:1").architecture["strategy"] == "export"
    assert nbmodelpack.show("scorer:1").metrics["train"]["epochs"] == 2


KERNEL_SETUP = """
import time, torch, nbmodelpack
from models import MLP
torch.manual_seed(0)
x = torch.randn(512, 1, 28, 28)
y = x.flatten(1)[:, :10].argmax(1)

class SlowLoader:
    '''A few batches per epoch, slowly; remembers the weights at the end of each epoch.'''
    def __init__(self, model):
        self.dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
        self.model, self.ends = model, []
    def __len__(self):
        return len(self.dl)
    def __iter__(self):
        for batch in self.dl:
            time.sleep(0.05)
            yield batch
        # fit asks for the next batch after the last optimizer step: these are the epoch's weights
        self.ends.append({k: v.clone() for k, v in self.model.state_dict().items()})

model = MLP(hidden=16)
loader = SlowLoader(model)
"""
KERNEL_CHECK = """
kept = history.kept
same = all(torch.equal(v, loader.ends[kept][k]) for k, v in model.state_dict().items())
print(history.interrupted, len(history), kept is not None, same, model._nbmodelpack_metrics["train"].get("epochs") == kept + 1)
"""


def test_kernel_interrupt_during_fit_stops_cleanly_with_whole_weights(home: Path, tmp_path: Path) -> None:
    """The real thing: the kernel gets SIGINT from its manager (the ■ button) in the middle of fit."""
    from jupyter_client.manager import start_new_kernel

    kernels.ensure_python3_kernelspec()
    km, kc = start_new_kernel(kernel_name="python3", env=kernel_env(NBMODELPACK_HOME=str(home)), cwd=str(tmp_path))
    try:
        assert kc.execute_interactive(KERNEL_SETUP, timeout=120)["content"]["status"] == "ok"
        msg_id = kc.execute("history = nbmodelpack.fit(model, loader, epochs=200)")
        shown: list[dict] = []

        def collect(timeout: float) -> str:
            msg = kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] in ("display_data", "update_display_data", "error"):
                shown.append(msg)
            return json.dumps(msg["content"])

        # Wait until the live table widget shows two finished epochs, then press ■.
        deadline = time.monotonic() + 90
        while "2 epochs in" not in collect(timeout=90):
            assert time.monotonic() < deadline, "fit did not finish two epochs"
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "ok"  # fit returned: no KeyboardInterrupt traceback
        with contextlib.suppress(queue.Empty):
            while True:
                collect(timeout=2)
        assert not [m for m in shown if m["msg_type"] == "error"]
        final = [m["content"]["data"].get("text/plain", "") for m in shown if m["msg_type"] == "update_display_data"]
        assert any("interrupted in epoch" in text and "kept the weights of epoch" in text for text in final), final
        outputs: list[dict] = []
        check = kc.execute_interactive(KERNEL_CHECK, timeout=60, output_hook=outputs.append)
        assert check["content"]["status"] == "ok", check["content"]
        printed = "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
        interrupted, epochs, kept, same, metrics_match = printed.split()
        assert (interrupted, kept, same, metrics_match) == ("True", "True", "True", "True") and 1 <= int(epochs) < 200
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


TRANSFER = kernels.ROOT / "notebooks" / "06-transfer-learning.ipynb"


def _text(cell) -> str:
    """Everything a cell printed or displayed, as plain text."""
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def test_transfer_learning_tutorial_runs_headless_and_packs_a_child_with_its_lineage(home: Path, tmp_path: Path) -> None:
    kernels.ensure_python3_kernelspec()
    nb = nbformat.read(TRANSFER, as_version=4)
    started = time.monotonic()
    # TMPDIR: the tutorial's own work directory (mkdtemp) lands in this test's, which pytest removes.
    env = kernel_env(NBMODELPACK_HOME=str(home), NBMODELPACK_NO_PROGRESS="1", TMPDIR=str(tmp_path))
    execute_notebook(nb, cwd=TRANSFER.parent, env=env, timeout=240)
    seconds = time.monotonic() - started
    assert error_outputs(nb) == []
    assert seconds < 300, f"the tutorial took {seconds:.0f} s"  # about 35 s on 2 idle cores; the bound allows a busy machine
    code = [c for c in nb.cells if c.cell_type == "code"]
    pulled = next(c for c in code if "%modelpack pull" in c.source)
    assert "local bundles before the pull: []" in _text(pulled) and _text(pulled).count("digits-0-4:1") >= 1
    loaded = next(c for c in code if "%modelpack load digits-0-4:1 as base" in c.source)
    assert "DigitMLP · live class" in _text(loaded)  # the class of this kernel: no bundle code ran
    compared = next(c for c in code if "trained from scratch" in c.source)
    lines = [ln for ln in _text(compared).splitlines() if "% of" in ln]
    assert [ln.split("  ")[0] for ln in lines] == ["new head on frozen features", "fine-tuned, all layers", "trained from scratch"]
    assert all(0 <= float(ln.split()[-7]) <= 100 for ln in lines)
    child = next(c for c in code if "%modelpack pack tuned" in c.source)
    assert _text(child).startswith("digits-5-9:1") and "finetune of digits-0-4:1" in _text(child)
    listing = next(c for c in code if c.source.strip() == "%modelpack ls")
    assert "finetune of digits-0-4:1" in _text(listing)
    card = _text(next(c for c in code if c.source.startswith("card = ")))
    assert "| validation | accuracy |" in card and "| train | loss |" in card
    assert "- digits-0-4:1: pack (its metrics: validation accuracy" in card
    assert "- this version: finetune of digits-0-4:1 (" in card and "head=5" in card and "epochs=15" in card
    tuned = next(c for c in code if "%modelpack finetune digits-0-4:1" in c.source)
    assert "fine-tuned digits-0-4:1 as `tuned`" in _text(tuned)
