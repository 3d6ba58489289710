"""The base install (no extras, no torch): the CLI lists and helps, and a verb that needs an
extra answers one line naming it.

The venv is made once per session in a temporary directory: ``pip install`` of this tree
with only ``hatchling`` as build backend (``--no-build-isolation``) and
``HATCH_BUILD_NO_HOOKS=true``, so the JupyterLab build hook (jlpm) does not run; the wheel
then carries no sidebar, which the CLI does not need. The base dependencies come from the
package index through pip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from conftest import ROOT, subprocess_env

from nbmodelpack.extras import EXTRA_OF_MODULE, missing_extra


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extras() -> dict[str, set[str]]:
    """pyproject's extras (not ``dev``) as sets of normalised distribution names (an extra that includes another names nbmodelpack: left out)."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {extra: {_normal(re.split(r"[<>=!~\[; ]", req)[0]) for req in reqs} for extra, reqs in table.items() if extra != "dev"}
    return {extra: dists - {"nbmodelpack"} for extra, dists in names.items()}


def test_every_mapped_module_comes_with_the_extra_it_names():
    extras, providers = _extras(), packages_distributions()
    wrong = {m: e for m, e in EXTRA_OF_MODULE.items() if not {_normal(d) for d in providers.get(m, [])} & extras[e]}
    assert wrong == {}


def test_every_distribution_of_an_extra_has_a_mapped_module():
    providers = packages_distributions()
    mapped = {_normal(d) for m in EXTRA_OF_MODULE for d in providers.get(m, [])}
    unmapped = {extra: dists - mapped for extra, dists in _extras().items() if dists - mapped}
    assert unmapped == {}


def test_missing_extra_names_the_pip_line_and_ignores_other_modules():
    error = missing_extra(ModuleNotFoundError("No module named 'pyrage.x25519'", name="pyrage.x25519"))
    assert error is not None and str(error) == "this needs the 'crypto' extra: module 'pyrage' is not installed (pip install 'nbmodelpack[crypto]')"
    assert error.exit_code == 2 and error.http_status == 400
    assert missing_extra(ModuleNotFoundError("No module named 'leftpad'", name="leftpad")) is None
    assert missing_extra(ModuleNotFoundError("no name given")) is None


# --- a real base install ---


@pytest.fixture(scope="session")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with ``pip install <this tree>`` and nothing else (no extras)."""
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["hatchling"], ["--no-build-isolation", str(ROOT)]):
        proc = subprocess.run([*pip, *args], env={**env, "HATCH_BUILD_NO_HOOKS": "true"}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def _modelpack(venv: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(NBMODELPACK_HOME=str(home), NBMODELPACK_NO_PROGRESS="1")
    return subprocess.run([str(venv / "bin" / "modelpack"), *args], env=env, cwd=home.parent, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def packed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding ``tiny:1``, packed by the full install (the base one cannot pack)."""
    home = tmp_path_factory.mktemp("base-install-home") / "mphome"
    code = "import torch, nbmodelpack; from models import MLP; nbmodelpack.pack(MLP(hidden=4), 'tiny', example=torch.zeros(1, 1, 28, 28))"
    subprocess.run([sys.executable, "-c", code], env=subprocess_env(NBMODELPACK_HOME=str(home)), check=True, capture_output=True, timeout=300)
    return home


@pytest.mark.e2e
@pytest.mark.slow
def test_base_install_has_no_extra_installed(base_venv: Path):
    code = "import importlib.util as u, sys; from nbmodelpack.extras import EXTRA_OF_MODULE as m; print(sorted(n for n in m if u.find_spec(n)))"
    proc = subprocess.run([str(base_venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=base_venv, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.e2e
@pytest.mark.slow
def test_base_install_helps_and_lists(base_venv: Path, packed_home: Path):
    helped = _modelpack(base_venv, packed_home, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "publish" in helped.stdout and "serve" in helped.stdout
    listed = _modelpack(base_venv, packed_home, "ls")
    assert listed.returncode == 0, listed.stderr
    assert "tiny" in listed.stdout and listed.stderr == ""
    shown = _modelpack(base_venv, packed_home, "show", "tiny:1")
    assert shown.returncode == 0, shown.stderr
    assert "tiny:1" in shown.stdout
    checked = _modelpack(base_venv, packed_home, "fsck")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve", "tiny:1"], "serve"),
        (["publish", "tiny:1", "--to", "oci://127.0.0.1:9/team"], "remote"),
        (["compress", "tiny:1", "--quantize", "int8"], "torch"),
        (["encrypt", "tiny:1", "--to", "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"], "crypto"),
    ],
    ids=["serve", "publish", "compress", "encrypt"],
)
def test_base_install_names_the_missing_extra_in_one_line(base_venv: Path, packed_home: Path, args: list[str], extra: str):
    proc = _modelpack(base_venv, packed_home, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: this needs the {extra!r} extra: module ")
    assert lines[0].endswith(f"(pip install 'nbmodelpack[{extra}]')")
