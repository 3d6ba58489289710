"""Every shell command in README.md runs as written, from a fresh clone's point of view.

The README's ``sh`` blocks are read in order and each line runs in bash, in a fresh
HOME (so the store is the default ``~/.local/share/nbmodelpack``) with the venv's
``bin`` on ``PATH`` (as after ``source .venv/bin/activate``). What the test sets up
itself, because a reader has it already: the ``mnist-mlp`` bundle ``make demo``
packs. What it runs differently: ``make demo`` / ``make test`` are dry runs
(``make -n``: the targets exist and expand); ``make lab`` is expanded with ``make -n``
and the ``jupyter lab`` line it would run is started and must answer (as root it
must carry ``--allow-root``); ``modelpack serve`` blocks, so it runs in the background
until it answers, on a free port instead of 8000 (other tests share this machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from e2e.processes import free_port, running

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def readme_commands(text: str) -> list[str]:
    """The command lines of the README's ``sh`` blocks, in order (comment-only lines left out)."""
    out: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        out += [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return out


@pytest.fixture
def fresh_user(tmp_path: Path) -> dict[str, str]:
    """A user with a fresh HOME, the venv active, and the bundle `make demo` would have packed."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBMODELPACK_", "XDG_", "DOCKER_CONFIG"))}
    env.update(HOME=str(home), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", NBMODELPACK_NO_PROGRESS="1")
    # tests/ on the path so the stand-in for the demo's model class can be imported (and trusted).
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    store_home = home / ".local" / "share" / "nbmodelpack"
    store_home.mkdir(parents=True)
    (store_home / "config.toml").write_text('[trust]\nmodules = ["models"]\n')
    pack = (
        "import torch, nbmodelpack; from models import MLP; from nbmodelpack.pytorch.data import MNIST_PREPROCESS; "
        "torch.manual_seed(0); print(nbmodelpack.pack(MLP(hidden=8), 'mnist-mlp', example=torch.zeros(1, 1, 28, 28), "
        "labels=range(10), preprocess=MNIST_PREPROCESS).ref)"
    )
    done = subprocess.run([sys.executable, "-c", pack], env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "mnist-mlp:1", done.stderr
    return env


def _make_lab(env: dict[str, str]) -> None:
    dry = subprocess.run(["make", "-n", "lab"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    line = next(ln for ln in dry.stdout.replace("\\\n", " ").splitlines() if "jupyter lab" in ln)
    assert ("--allow-root" in line) == (os.getuid() == 0), line
    port = free_port()
    argv = shlex.split(line.replace(".venv/bin/", f"{VENV_BIN}/"))
    argv += [f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1", "--no-browser", "--ServerApp.token=readme-test"]
    with running(argv, ready=f"http://127.0.0.1:{port}/api/status?token=readme-test", env=env, cwd=ROOT, timeout=120) as proc:
        assert proc.poll() is None  # make lab's server answered


def test_every_readme_command_runs_as_written(fresh_user: dict[str, str], tmp_path: Path) -> None:
    commands = readme_commands((ROOT / "README.md").read_text())
    assert any(c.startswith("modelpack publish") for c in commands) and any(c.startswith("make lab") for c in commands)
    work = tmp_path / "work"
    work.mkdir()
    port = str(free_port())
    with contextlib.ExitStack() as servers:
        for command in commands:
            if command.startswith(("make demo", "make test")):
                target = command.split()[1]
                dry = subprocess.run(["make", "-n", target], cwd=ROOT, env=fresh_user, capture_output=True, text=True, timeout=60)
                assert dry.returncode == 0, f"{command}: {dry.stderr}"
                continue
            if command.startswith("make lab"):
                _make_lab(fresh_user)
                continue
            line = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            if command.startswith("modelpack serve"):
                cmd = ["bash", "-c", re.sub(r"\s+#\s.*$", "", line) + f" --port {port}"]
                servers.enter_context(running(cmd, ready=f"http://127.0.0.1:{port}/v2/health/ready", env=fresh_user, cwd=work, log=tmp_path / "serve.log", timeout=180))
                continue
            done = subprocess.run(["bash", "-c", line], cwd=work, env=fresh_user, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{command}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
            if command.startswith("curl"):
                assert '"prediction"' in done.stdout, done.stdout

