"""notebooks/03-encrypt-and-sign.ipynb runs top to bottom in a real kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOK = ROOT / "notebooks" / "03-encrypt-and-sign.ipynb"


def _text(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or "".join(str(v) for v in o.get("data", {}).values()))
    return "\n".join(out)


@pytest.mark.slow
def test_encrypt_and_sign_notebook_runs_and_shows_each_outcome(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("NBMODELPACK_PASSPHRASE", "tutorial passphrase")  # what getpass would ask for
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = _text(nb)
    assert "badges: ['encrypted']" in text
    assert "verified: mnist-mlp:" in text
    assert "accuracy after decrypt-in-memory" in text
    assert "stranger's key     -> decryption: model.safetensors: none of the given identities can open it" in text
    assert "wrong passphrase   -> decryption: model.safetensors: wrong passphrase" in text
    assert "(unsigned) -> signature: mnist-mlp:" in text and "is not signed" in text
    assert "as exported -> Verification succeeded" in text
    assert "one byte off -> Verification failed" in text
    assert "tutorial passphrase" not in NOTEBOOK.read_text()  # the secret is not in the notebook
    assert not (home / "config.toml").exists() or "require_signature = true" not in (home / "config.toml").read_text()
