"""pack/load of a 1 GiB fp32 model vs torch.save/torch.load, safetensors and a raw copy.

Run: .venv/bin/python bench/pack_load.py [--gib 1.0] [--repeat 3]
Prints seconds (best of --repeat) and each time as a ratio to safetensors.
Goals: pack <= 1.3x save_file, load <= 1.3x load_file.

The model class is defined in this script (``__main__``), so ``nbmodelpack.pack`` takes
the export path; the same layers in an ``nn.Sequential`` take the module-tree path (no
graph). "fresh process" rows load and touch every weight in a new interpreter (timed
after ``import torch, nbmodelpack``), so they include what the first load of a process
imports.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NBMODELPACK_NO_PROGRESS", "1")

import safetensors.torch
import torch

import nbmodelpack


class Wide(torch.nn.Module):
    """A stack of square linear layers: ``layers * width**2 * 4`` bytes of weights."""

    def __init__(self, layers: int, width: int) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width, bias=False) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


FRESH_LOAD = r"""
import sys, time
import torch, nbmodelpack
t = time.perf_counter()
m = nbmodelpack.load(sys.argv[1])
with torch.no_grad():
    [p.sum() for p in m.state_dict().values()]
print(time.perf_counter() - t)
"""


def fresh_load(ref: str, repeat: int) -> float:
    """Best load + touch time of ``ref`` in a new interpreter (same NBMODELPACK_HOME)."""
    run = lambda: float(subprocess.run([sys.executable, "-c", FRESH_LOAD, ref], capture_output=True, text=True, check=True).stdout.split()[-1])  # noqa: E731
    return min(run() for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    width = 4096
    layers = max(1, round(args.gib * 2**30 / (width * width * 4)))
    torch.manual_seed(0)
    with torch.no_grad():
        model = Wide(layers, width).eval()
    state = model.state_dict()
    nbytes = sum(t.nbytes for t in state.values())
    work = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    os.environ["NBMODELPACK_HOME"] = str(work / "home")
    example = torch.randn(2, width)
    print(f"model: {layers} x Linear({width}, {width}) = {nbytes / 2**30:.2f} GiB fp32; best of {args.repeat}")

    st_file = work / "w.safetensors"
    pt_file = work / "w.pt"
    results: dict[str, float] = {}
    results["raw copy (read+write)"] = 0.0
    results["safetensors save_file"] = best(lambda: safetensors.torch.save_file(state, st_file), args.repeat)
    results["raw copy (read+write)"] = best(lambda: shutil.copyfile(st_file, work / "copy.bin"), args.repeat)
    results["torch.save"] = best(lambda: torch.save(state, pt_file), args.repeat)
    # Export once outside the timed loop too, so its first-call warm-up is not counted.
    nbmodelpack.pack(model, "warm", example=example)
    results["nbmodelpack.pack"] = best(lambda: nbmodelpack.pack(model, "bench", example=example), args.repeat)
    with torch.device("meta"):  # the same bytes as one torch class (the class path: no graph either)
        one = torch.nn.Linear(width, width * layers, bias=False)
    one.weight = torch.nn.Parameter(torch.cat([layer.weight for layer in model.layers]), requires_grad=False)
    results["pack, torch class (Linear)"] = best(lambda: nbmodelpack.pack(one, "one", example=example), args.repeat)
    tree = torch.nn.Sequential(*model.layers)  # the same layers (and weights) as a module tree
    results["pack, Sequential (modules)"] = best(lambda: nbmodelpack.pack(tree, "tree", example=example), args.repeat)
    # load_file maps the file lazily; touching every tensor makes it read the bytes, as a model would.
    results["safetensors load_file"] = best(lambda: [t.sum() for t in safetensors.torch.load_file(st_file).values()], args.repeat)
    # The floor for a verified load: map the file and sha256 every byte (what a digest check costs).
    results["load_file + sha256 (floor)"] = best(lambda: (safetensors.torch.load_file(st_file), hashlib.sha256(st_file.read_bytes()).hexdigest()), args.repeat)
    results["torch.load(weights_only)"] = best(lambda: torch.load(pt_file, weights_only=True), args.repeat)
    results["nbmodelpack.load"] = best(lambda: nbmodelpack.load("bench:latest"), args.repeat)
    results["load+touch, graph, fresh proc"] = fresh_load("bench:latest", args.repeat)
    results["load+touch, modules, fresh"] = fresh_load("tree:latest", args.repeat)
    assert nbmodelpack.load("tree:latest").bundle_form == "modules"

    save_ref, load_ref = results["safetensors save_file"], results["safetensors load_file"]
    print(f"{'operation':28} {'seconds':>8} {'GiB/s':>7} {'vs safetensors':>15}")
    for name, secs in results.items():
        ref = load_ref if "load" in name else save_ref
        print(f"{name:28} {secs:8.3f} {nbytes / 2**30 / secs:7.2f} {secs / ref:14.2f}x")
    pack_ratio = results["nbmodelpack.pack"] / save_ref
    load_ratio = results["nbmodelpack.load"] / load_ref
    floor_ratio = results["nbmodelpack.load"] / results["load_file + sha256 (floor)"]
    print(f"\npack = {pack_ratio:.2f}x save_file (goal <= 1.3x); load = {load_ratio:.2f}x load_file (goal <= 1.3x)")
    print(f"load = {floor_ratio:.2f}x the verified floor (load_file + sha256): every blob is hashed on read")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
