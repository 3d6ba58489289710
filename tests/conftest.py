"""Shared fixtures: every test gets its own NBMODELPACK_HOME and no progress bars."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def trust_test_models(home: Path) -> None:
    """Let ``load`` import the classes of tests/models.py, as a user lists their own modules in config.toml."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('[trust]\nmodules = ["models"]\n')


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh nbmodelpack home (store, config, keys) for each test; its config trusts tests/models.py."""
    h = tmp_path / "mphome"
    trust_test_models(h)
    monkeypatch.setenv("NBMODELPACK_HOME", str(h))
    monkeypatch.setenv("NBMODELPACK_NO_PROGRESS", "1")
    monkeypatch.setenv("NBMODELPACK_MNIST", str(ROOT / "notebooks" / "data"))
    return h


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a fresh Python process that can import the tests' model classes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@pytest.fixture
def run_py():
    """Run Python code in a fresh process (that never saw the test's classes); return stdout."""

    def run(code: str, *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    return run


@pytest.fixture
def cli():
    """Run the `modelpack` CLI in a subprocess; return the CompletedProcess."""

    def run(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "nbmodelpack", *args], env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"modelpack {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    return run
