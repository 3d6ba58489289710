"""The sidebar's TypeScript as code: ESLint + Prettier clean, and its pure functions pass their Jest tests.

Needs ``labextension/node_modules`` (``make labext`` installs it from the lock file).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LABEXT = Path(__file__).resolve().parents[1] / "labextension"

pytestmark = pytest.mark.slow


def _jlpm(script: str) -> subprocess.CompletedProcess[str]:
    if not (LABEXT / "node_modules" / ".bin" / "jest").exists():
        pytest.fail(f"{LABEXT / 'node_modules'} is missing (run: make labext)")
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return subprocess.run(["jlpm", script], cwd=LABEXT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", ["lint:check", "test"])
def test_the_sidebar_source_passes_its_lint_and_unit_tests(script: str) -> None:
    proc = _jlpm(script)
    assert proc.returncode == 0, f"jlpm {script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
