"""Shared e2e fixtures: the tutorial notebook executed once per session on a real kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kernels import ARTIFACTS, ROOT, TUTORIAL, execute_notebook, kernel_env


@pytest.fixture(scope="session")
def executed_tutorial(tmp_path_factory: pytest.TempPathFactory):
    """(executed notebook, its nbmodelpack home): the tutorial run once, saved to test-artifacts/."""
    import nbformat

    home = tmp_path_factory.mktemp("tutorial-home")
    env = kernel_env(NBMODELPACK_HOME=str(home), NBMODELPACK_NO_PROGRESS="1", NBMODELPACK_MNIST=str(ROOT / "notebooks" / "data"))
    nb = nbformat.read(TUTORIAL, as_version=4)
    execute_notebook(nb, cwd=TUTORIAL.parent, env=env)
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "01-train-and-pack.executed.ipynb"
    nbformat.write(nb, out)
    return nb, home, out



@pytest.fixture(scope="session", autouse=True)
def _python3_kernelspec() -> None:
    """The `python3` kernel must run this interpreter (the venv's); install its spec if it is missing."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", sys.prefix], check=True, capture_output=True)
