"""JupyterLab in headless Chromium shows the executed tutorial: the training dashboard and a bundle card.

Saves PNGs to test-artifacts/ (docs/img/ keeps a copy for the README).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import kernels
import nbformat
import pytest
from kernels import ARTIFACTS, kernel_env
from processes import free_port, running

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def executed_tutorial(tmp_path_factory: pytest.TempPathFactory):
    """The tutorial executed on a real kernel (once per session, shared with the other e2e module)."""
    return kernels.executed_tutorial(tmp_path_factory.getbasetemp())

CHROMIUM = "/usr/lib/chromium/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--no-proxy-server"]
# Lab settings for a quiet, deterministic page: no news toast, every cell rendered.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


# A run still going: the widgets stay live (track() not closed yet).
LIVE_CELL = """import time
import nbmodelpack

t = nbmodelpack.track(total=10, x="epoch", title="my own loop (live)")
for epoch in range(1, 5):
    time.sleep(0.6)  # one epoch of training
    t.log(loss=1.2 / epoch, val_loss=1.3 / epoch + 0.05, acc=60 + 8 * epoch, val_acc=58 + 7 * epoch)"""


def _luminance(css_color: str) -> float:
    r, g, b = (int(float(v)) for v in css_color[css_color.index("(") + 1 : -1].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@pytest.fixture
def lab(executed_tutorial, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A JupyterLab server on a free port; its root holds the executed (and trusted) tutorial and live.ipynb."""
    from nbformat.sign import NotebookNotary

    nb, _home, _saved = executed_tutorial
    root, data, settings = tmp_path / "root", tmp_path / "data", tmp_path / "settings"
    root.mkdir()
    data.mkdir()
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    # Outputs this session produced are trusted in Lab; a saved notebook needs the user's signature.
    NotebookNotary(data_dir=str(data)).sign(nb)
    nbformat.write(nb, root / "01-train-and-pack.ipynb")
    live = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LIVE_CELL)], metadata={"kernelspec": nb.metadata["kernelspec"]})
    nbformat.write(live, root / "live.ipynb")
    token, port = "e2e-" + os.urandom(8).hex(), free_port()
    env = kernel_env(JUPYTER_DATA_DIR=str(data), JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    base = f"http://127.0.0.1:{port}"
    with running(cmd, env=env, log=tmp_path / "lab.log", ready=f"{base}/api/status?token={token}"):
        yield base, token, tmp_path


def test_lab_shows_the_training_dashboard_and_the_bundle_card(lab) -> None:
    """Light theme: dashboard and card; dark theme: the bundle table keeps readable colours."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    base, token, tmp = lab
    url = f"{base}/lab/tree/01-train-and-pack.ipynb?token={token}"
    ARTIFACTS.mkdir(exist_ok=True)
    dashboard_png, card_png, table_png = ARTIFACTS / "dashboard.png", ARTIFACTS / "bundle-card.png", ARTIFACTS / "bundle-table-dark.png"
    live_png = ARTIFACTS / "dashboard-live.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1480, "height": 1000})
            # The live dashboard first (one notebook open): run a cell in Lab's kernel, look at its widgets.
            page.goto(f"{base}/lab/tree/live.ipynb?token={token}", timeout=90_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)
            live_cell = page.locator(".jp-CodeCell").filter(has_text="nbmodelpack.track(")
            live_cell.locator(".jp-InputPrompt").click()
            page.keyboard.press("Shift+Enter")
            live_cell.locator(".jp-InputPrompt", has_text="[1]").wait_for(timeout=60_000)  # the cell finished
            live_img = live_cell.locator(".widget-image")
            live_img.wait_for(state="visible", timeout=120_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=live_img.element_handle())
            progress = live_cell.locator(".widget-hprogress")
            assert progress.count() == 1
            live_text = live_cell.inner_text()
            assert "4/10" in live_text and "ETA" in live_text and "val_acc" in live_text, live_text
            live_cell.screenshot(path=str(live_png))

            # The executed tutorial: static dashboard and card (a new page: live.ipynb has unsaved changes).
            page = browser.new_page(viewport={"width": 1480, "height": 1000})
            page.goto(url, timeout=90_000)
            card = page.locator(".nbmp-card").first
            card.wait_for(state="visible", timeout=90_000)

            fit_cell = page.locator(".jp-CodeCell").filter(has_text="history = nbmodelpack.fit(")
            fit_cell.scroll_into_view_if_needed()
            curves = fit_cell.locator(".jp-OutputArea-output img")
            curves.wait_for(state="visible", timeout=30_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=curves.element_handle())
            assert fit_cell.locator("progress").count() == 1
            assert "val_accuracy" in fit_cell.inner_text() and "2 epochs in" in fit_cell.inner_text()
            fit_cell.screenshot(path=str(dashboard_png))

            pack_cell = page.locator(".jp-CodeCell").filter(has=page.locator(".nbmp-card")).first
            pack_cell.scroll_into_view_if_needed()
            text = card.inner_text()
            assert "mnist-mlp" in text and "validation metrics" in text and "%modelpack load mnist-mlp:1" in text
            # the notebook is trusted, so the card's own stylesheet applies (JupyterLab CSS variables)
            assert card.evaluate("el => getComputedStyle(el).borderTopLeftRadius") == "6px"
            pack_cell.screenshot(path=str(card_png))


            # The dark theme: the table takes its colours from JupyterLab's CSS variables.
            theme = tmp / "settings" / "@jupyterlab/apputils-extension/themes.jupyterlab-settings"
            theme.parent.mkdir(parents=True, exist_ok=True)
            theme.write_text(json.dumps({"theme": "JupyterLab Dark"}))
            page.goto(url, timeout=90_000)
            table = page.locator(".nbmp-list").first
            table.wait_for(state="visible", timeout=90_000)
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
            ls_cell = page.locator(".jp-CodeCell").filter(has=page.locator(".nbmp-list")).first
            ls_cell.scroll_into_view_if_needed()
            text_color = table.evaluate("el => getComputedStyle(el.querySelector('td')).color")
            assert _luminance(text_color) > 0.5, text_color  # light text on the dark background
            ls_cell.screenshot(path=str(table_png))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "lab-failure.png"))
            raise
        finally:
            browser.close()
    for png in (dashboard_png, card_png, table_png, live_png):
        with Image.open(png) as im:
            assert im.width >= 600 and im.height >= 80, (png, im.size)  # a one-row table is about 90 px high
            colors = im.convert("RGB").getcolors(maxcolors=1 << 20) or []
            assert len(colors) > 50, f"{png.name} looks blank"
