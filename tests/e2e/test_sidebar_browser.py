"""The JupyterLab sidebar in a real browser: JupyterLab + Galata/Playwright on Debian's Chromium.

Starts ``jupyter lab`` (token auth on, our server extension, the built
labextension, Galata's helper extension) on a free port, then runs the Galata
specs in ``labextension/ui-tests``. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import free_port, running

ROOT = Path(__file__).resolve().parents[2]
LABEXT = ROOT / "labextension"
BUILT = ROOT / "nbmodelpack" / "labextension"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/lib/chromium/chromium"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Remote ``team`` on a real registry (Debian's docker-registry, htpasswd auth), logged in."""
    from nbmodelpack import remote

    sys.path.insert(0, str(Path(__file__).parent))
    from registry_server import running_registry

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # never the user's ~/.docker
    with running_registry(tmp_path / "registry") as registry:
        remote.add_remote("team", f"oci://{registry.host}/sidebar", insecure=True)
        remote.login("team", registry.user, registry.password)
        yield "team"


@pytest.fixture
def lab(tmp_path: Path, home: Path, team: str) -> Iterator[dict[str, str]]:
    """A running JupyterLab with nbmodelpack; yields its URL, token and remote name."""
    for needed, how in [
        (BUILT / "package.json", "make labext"),
        (LABEXT / "node_modules" / "@jupyterlab" / "galata", "make labext"),
        (Path(CHROMIUM), "apt-get install chromium"),
    ]:
        if not needed.exists():
            pytest.fail(f"{needed} is missing (run: {how})")
    import jupyterlab

    port, token = free_port(), secrets.token_hex(16)
    extensions = tmp_path / "labextensions"
    extensions.mkdir()
    (extensions / "nbmodelpack").symlink_to(BUILT)  # the freshly built sidebar wins over any installed copy
    root_dir = tmp_path / "notebooks"
    root_dir.mkdir()
    config = tmp_path / "jupyter_config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(
        "\n".join(
            [
                "c.ServerApp.ip = '127.0.0.1'",
                f"c.ServerApp.port = {port}",
                "c.ServerApp.port_retries = 0",
                "c.ServerApp.open_browser = False",
                "c.ServerApp.allow_root = True",
                f"c.IdentityProvider.token = {token!r}",
                f"c.ServerApp.root_dir = {str(root_dir)!r}",
                "c.ServerApp.jpserver_extensions = {'nbmodelpack.labapi': True}",
                f"c.LabServerApp.extra_labextensions_path = [{str(extensions)!r}, {str(Path(jupyterlab.__file__).parent / 'galata')!r}]",
                f"c.LabApp.workspaces_dir = {str(tmp_path / 'workspaces')!r}",
                "c.LabApp.expose_app_in_browser = True",
                "c.LabApp.news_url = None",
                "c.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'",
            ]
        )
    )
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        NBMODELPACK_HOME=str(home),
        NBMODELPACK_NO_PROGRESS="1",
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        IPYTHONDIR=str(tmp_path / "ipython"),
    )
    url = f"http://127.0.0.1:{port}"
    ready = f"{url}/nbmodelpack/api/bundles"
    with running([sys.executable, "-m", "jupyterlab"], env=env, log=tmp_path / "jupyter-lab.log", ready=ready, headers={"Authorization": f"token {token}"}, timeout=60, cwd=root_dir):
        yield {"url": url, "token": token, "remote": team, "log": str(tmp_path / "jupyter-lab.log")}


def test_sidebar_in_jupyterlab_with_chromium(lab: dict[str, str]) -> None:
    """Galata specs: a packed bundle appears, loads into a notebook, serves, publishes to the registry and
    pulls back; Published follows a cell's publish without a click; keyboard focus survives a refresh;
    an encrypted bundle loads with a key file."""
    ARTIFACTS.mkdir(exist_ok=True)
    for old in [*ARTIFACTS.glob("sidebar-*.png"), *ARTIFACTS.glob("details-*.png"), *ARTIFACTS.glob("ls-table-*.png")]:
        old.unlink()
    env = dict(os.environ)
    env.update(
        TARGET_URL=lab["url"],
        JUPYTER_TOKEN=lab["token"],
        NBMODELPACK_ARTIFACTS=str(ARTIFACTS),
        NBMODELPACK_E2E_REMOTE=lab["remote"],
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1",
        CHROMIUM_PATH=CHROMIUM,
    )
    playwright = LABEXT / "node_modules" / ".bin" / "playwright"
    proc = subprocess.run(
        [str(playwright), "test", "--config", "ui-tests/playwright.config.ts"],
        cwd=LABEXT, env=env, capture_output=True, text=True, timeout=420,
    )
    if proc.returncode != 0:
        server_log = Path(lab["log"]).read_text(errors="replace")[-4000:]
        shutil.copy(lab["log"], ARTIFACTS / "jupyter-lab.log")
        raise AssertionError(f"galata failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}\n--- jupyter lab log ---\n{server_log}")
    for shot in ("sidebar-light.png", "sidebar-dark.png", "details-light.png", "details-encrypted-light.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000, shot
    assert (ARTIFACTS / "ls-table-light.png").stat().st_size > 2_000
