"""`make demo`: the main job end to end on the default local store.

Every step prints one line of what it did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nbmodelpack
from nbmodelpack.pytorch.data import MNIST_PREPROCESS, accuracy, mnist_loaders

ROOT = Path(__file__).resolve().parents[1]


class DemoMLP(nn.Module):
    """Defined in __main__: packing captures it as a torch.export graph."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def fresh_process_accuracy(ref: str) -> dict[str, Any]:
    """Load ``ref`` in a new Python process and measure its held-out accuracy there."""
    code = (
        "import json, nbmodelpack; from nbmodelpack.pytorch.data import mnist_loaders, accuracy;"
        f"m = nbmodelpack.load({ref!r}); _, test = mnist_loaders(n_train=8000);"
        "print(json.dumps({'accuracy': accuracy(m, test), 'type': type(m).__name__}))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def encrypt_sign_load(info: nbmodelpack.BundleInfo, acc: float) -> None:
    """Encrypt for my age key, sign with my ECDSA key, load in a fresh process under a trust policy."""
    from nbmodelpack import crypto, paths
    from nbmodelpack.config import edit_config

    step("encrypt -> sign -> verified load (age + OpenSSF model_signing)")
    keys = paths.keys_dir()
    identity, signing_key = keys / crypto.DEFAULT_IDENTITY_FILE, keys / "signing.pem"
    if not identity.exists():
        nbmodelpack.keygen_age(identity)
    if not signing_key.exists():
        nbmodelpack.keygen_signing(signing_key)
    sealed = nbmodelpack.encrypt(info.ref, recipients=[crypto.recipient_of(identity)])
    signed = nbmodelpack.sign(sealed.ref, key=signing_key)
    print(f"{sealed.ref} {sealed.badges}, {signed.ref} {signed.badges}")
    print(nbmodelpack.verify(signed.ref, key=str(signing_key) + ".pub"))
    with edit_config() as cfg:
        saved = cfg.get("trust")
        cfg["trust"] = {"require_signature": True, "keys": [str(signing_key) + ".pub"]}
    try:
        loaded = fresh_process_accuracy(signed.ref)
    finally:
        with edit_config() as cfg:
            cfg.pop("trust", None)
            if saved is not None:
                cfg["trust"] = saved
    print(f"signature verified, weights decrypted in memory: accuracy {loaded['accuracy']:.2f}% (packed {acc:.2f}%)")
    if abs(loaded["accuracy"] - acc) > 1e-9:
        sys.exit("demo failed: accuracy changed across encrypt/sign/load")


def publish_and_pull(info: nbmodelpack.BundleInfo, acc: float) -> None:
    """Publish to the configured remote (a file:// one under the demo's home if none), pull into a fresh store."""
    import tempfile

    from nbmodelpack import paths, remote

    step("publish → pull into a fresh store")
    if not remote.list_remotes():
        remote.add_remote("demo-share", (paths.home() / "demo-share").as_uri())
    result = nbmodelpack.publish(info.ref)
    print(result)
    print(nbmodelpack.commands.BundleList(nbmodelpack.list_remote(result.remote)[:3]))
    with tempfile.TemporaryDirectory(prefix="demo-pulled-") as fresh:
        pulled = nbmodelpack.pull(f"{result.remote}/{info.name}:{info.version}", store=fresh)
        _, test = mnist_loaders(n_train=8000)
        again = accuracy(nbmodelpack.load(pulled.ref, store=fresh), test)
    print(f"pulled {pulled.ref} ({pulled.digest[:19]}…, same digest: {pulled.digest == info.digest}); accuracy {again:.2f}%")
    if pulled.digest != info.digest or abs(again - acc) > 1e-9:
        sys.exit("demo failed: the pulled bundle differs")


def serve_step(ref: str) -> None:
    """Serve the bundle, send one real MNIST test image as a PNG to /predict, stop."""
    import urllib.request

    from nbmodelpack.serving.handle import mnist_png

    step("serve → POST /predict with an MNIST test image (PNG) → stop")
    srv = nbmodelpack.serve(ref, workers=2)
    try:
        print(srv)
        png, label = mnist_png(9999)
        req = urllib.request.Request(srv.url + "/predict", data=png, headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        print(f"test image 9999 (label {label}): prediction {answer['prediction']}, p={answer['probabilities'][answer['prediction']]:.3f}")
    finally:
        srv.stop()
    print("server stopped")
def step_compress_int8(ref: str, test: torch.utils.data.DataLoader) -> None:
    """Int8 weight-only quantization as a new version, with its size/accuracy row."""
    step(f"compress {ref} to int8 (new version, zstd weights)")
    report = nbmodelpack.compress(ref, quantize="int8", eval=test)
    print(report)
    p, c = report.parent, report.child
    print(f"int8: {c.ref} is {report.ratio:.2f}x smaller ({p.bundle_bytes:,} -> {c.bundle_bytes:,} bytes), accuracy {p.metric:.2f}% -> {c.metric:.2f}%")


def run_tutorial_notebook() -> None:
    """Execute notebooks/01-train-and-pack.ipynb on a headless kernel (nbclient) and report it."""
    import nbformat
    from nbclient import NotebookClient

    path = ROOT / "notebooks" / "01-train-and-pack.ipynb"
    step(f"tutorial {path.relative_to(ROOT)} on a headless kernel (nbclient)")
    nb = nbformat.read(path, as_version=4)
    started = time.time()
    env = {**os.environ, "NBMODELPACK_NO_PROGRESS": "1"}
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}, extra_arguments=["--IPKernelApp.log_level=ERROR"])
    client.execute(env=env)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]
    out = ROOT / ".demo" / "01-train-and-pack.executed.ipynb"
    out.parent.mkdir(exist_ok=True)
    nbformat.write(nb, out)
    code_cells = sum(c.cell_type == "code" for c in nb.cells)
    last = next((o["text"].strip() for o in reversed(outputs) if o.get("output_type") == "stream"), "")
    print(f"{code_cells} code cells ran in {time.time() - started:.0f} s, {len(errors)} errors; last line: {last!r}; saved {out.relative_to(ROOT)}")
    if errors:
        sys.exit(f"demo failed: the tutorial raised {errors[0]}")


def main() -> None:
    torch.manual_seed(0)
    t0 = time.time()
    train, test = mnist_loaders(n_train=8000)
    model = DemoMLP()

    step("train (MNIST, 8,000 train / 2,000 held-out images) with nbmodelpack.fit")
    nbmodelpack.fit(model, train, val_loader=test, epochs=3)
    acc = accuracy(model, test)

    step("pack (the card gets fit's metrics by itself)")
    example = next(iter(test))[0][:1]
    info = nbmodelpack.pack(model, "mnist-mlp", example=example, labels=range(10), preprocess=MNIST_PREPROCESS, description="MLP on MNIST (make demo)")
    print(info)

    step("ls")
    print(nbmodelpack.commands.BundleList(nbmodelpack.ls("mnist-mlp")[:5]))

    step("load in a fresh process (which never saw DemoMLP)")
    loaded = fresh_process_accuracy(info.ref)
    print(f"accuracy before pack {acc:.2f}%, after load {loaded['accuracy']:.2f}% ({loaded['type']})")
    if abs(loaded["accuracy"] - acc) > 1e-9:
        sys.exit("demo failed: accuracy changed across pack/load")

    # The whole pipeline: compress → encrypt → sign → publish → pull → serve.
    step_compress_int8(info.ref, test)
    encrypt_sign_load(info, acc)
    publish_and_pull(info, acc)
    serve_step(info.ref)
    run_tutorial_notebook()

    print(f"\ndemo done in {time.time() - t0:.0f} s; store: {nbmodelpack.get_store().root}")


if __name__ == "__main__":
    import nbmodelpack.commands  # noqa: F401 - for BundleList

    main()
