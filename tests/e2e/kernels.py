"""Helpers for e2e tests that run notebooks on real kernels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
TUTORIAL = ROOT / "notebooks" / "01-train-and-pack.ipynb"


def kernel_env(**extra: str) -> dict[str, str]:
    """Environment for a kernel: this one, plus this tree and tests/ first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("MPLBACKEND", None)  # the kernel picks its inline backend
    env.update(extra)
    return env


def execute_notebook(nb, *, cwd: Path, env: dict[str, str], timeout: int = 240, allow_errors: bool = False):
    """Run every cell of ``nb`` on a fresh python3 kernel (the one of this interpreter's venv)."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors, resources={"metadata": {"path": str(cwd)}},
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no transport warnings in the test log
    )
    client.execute(env=env)
    return nb


def error_outputs(nb) -> list[str]:
    """Every error output of an executed notebook, as text."""
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def ensure_python3_kernelspec() -> None:
    """The `python3` kernel must run this interpreter (the venv's); install its spec if it is missing."""
    import subprocess
    import sys

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", sys.prefix], check=True, capture_output=True)


_tutorial: dict[str, tuple[Any, Path, Path]] = {}


def executed_tutorial(scratch: Path) -> tuple[Any, Path, Path]:
    """(notebook, its nbmodelpack home, saved copy): the tutorial executed once per test session.

    Kept here rather than in a conftest so the tests that share it need no shared fixture file;
    the module is imported once, so the cache spans the session.
    """
    if "run" not in _tutorial:
        import nbformat

        ensure_python3_kernelspec()
        home = scratch / "tutorial-home"
        env = kernel_env(NBMODELPACK_HOME=str(home), NBMODELPACK_NO_PROGRESS="1", NBMODELPACK_MNIST=str(ROOT / "notebooks" / "data"))
        nb = nbformat.read(TUTORIAL, as_version=4)
        execute_notebook(nb, cwd=TUTORIAL.parent, env=env)
        ARTIFACTS.mkdir(exist_ok=True)
        out = ARTIFACTS / "01-train-and-pack.executed.ipynb"
        nbformat.write(nb, out)
        _tutorial["run"] = (nb, home, out)
    return _tutorial["run"]
