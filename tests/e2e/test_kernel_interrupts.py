"""Interrupting ``fit`` on a real kernel, at several moments (the first dashboard render among them), leaves the kernel healthy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kernels import ensure_python3_kernelspec, kernel_env

SETUP = """
import time, torch, nbmodelpack
from models import MLP
torch.manual_seed(0)
x = torch.randn(512, 1, 28, 28); y = x.flatten(1)[:, :10].argmax(1)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
def slow_loss(out, target):  # about 1.6 s per epoch: room to interrupt mid-epoch
    time.sleep(0.05)
    return torch.nn.functional.cross_entropy(out, target)
model = MLP(hidden=16)
nbmodelpack.fit  # the API module loads here, so the interrupts below land inside fit
import sys
print("matplotlib before:", "matplotlib" in sys.modules)
"""
FIT = "history = None\nhistory = nbmodelpack.fit(model, loader, val_loader=loader, epochs=3, loss=slow_loss)"
CHECK = """
import matplotlib.pyplot as plt
print("history:", type(history).__name__, history.interrupted, len(history.rows))
print("data path:", bool(matplotlib.get_data_path()))
fig = plt.figure(); plt.close(fig)
again = nbmodelpack.fit(MLP(hidden=4), [(x[:8], y[:8])], epochs=1)
print("again:", len(again.rows), again.interrupted)
"""


class Kernel:
    """One python3 kernel, driven as JupyterLab does (execute requests, interrupt as a signal)."""

    def __init__(self, home: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=kernel_env(NBMODELPACK_HOME=str(home), NBMODELPACK_NO_PROGRESS="1"), cwd=str(home.parent))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str, *, interrupt_after: float | None = None, timeout: float = 120) -> dict[str, Any]:
        """Execute ``code``; optionally interrupt it after some seconds; return its text and error name."""
        msg_id = self.kc.execute(code)
        if interrupt_after is not None:
            time.sleep(interrupt_after)
            self.km.interrupt_kernel()
        text, error = [], None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                text.append(content["text"])
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}\n" + "\n".join(content.get("traceback", []))
            elif kind == "status" and content["execution_state"] == "idle":
                return {"text": "".join(text), "error": error}
        raise AssertionError(f"no answer within {timeout} s to {code[:60]!r}")

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module", autouse=True)
def _kernelspec() -> None:
    ensure_python3_kernelspec()


# 0.0: while the first fit builds its dashboard and imports ipywidgets and matplotlib;
# later ones: mid-epoch, and between the first render and the second epoch.
@pytest.mark.parametrize("delays", [(0.15, 0.8), (0.0, 2.5), (0.4, 4.0)])
def test_interrupting_fit_at_any_moment_returns_its_history_and_leaves_matplotlib_whole(tmp_path: Path, delays: tuple[float, ...]) -> None:
    kernel = Kernel(tmp_path / "home")
    try:
        setup = kernel.run(SETUP)
        assert setup["error"] is None and "matplotlib before: False" in setup["text"], setup
        for delay in delays:
            fitted = kernel.run(FIT, interrupt_after=delay)
            assert fitted["error"] is None, f"interrupt after {delay} s: {fitted['error']}"
            checked = kernel.run("import matplotlib\n" + CHECK)
            assert checked["error"] is None, f"after an interrupt at {delay} s: {checked['error']}"
            assert "history: History" in checked["text"] and "data path: True" in checked["text"]
            assert "again: 1 False" in checked["text"]
    finally:
        kernel.stop()
