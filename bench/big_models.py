"""Big models: pack vs ``safetensors.save_file``, second load + touch vs ``load_file`` + touch, extra memory.

Run: .venv/bin/python bench/big_models.py --gib 3 [--trials 3] [--shard-size 2GiB] [--before DIR]

``--before DIR`` also times another checkout's code (e.g. an older commit) in the same run,
in a store of its own.

Every measurement runs in a fresh Python process (so peak RSS is its own), trials
interleaved (ours and the peer, who goes first alternating); prints medians and ratios.
Both sides start each measurement from the same state (see ``_fresh_start``): a pack finds
the other side's output on disk and none of its own; a load starts with every file out of the
page cache, so its first (untimed) load reads from disk and the timed second one finds its
files cached. On a VM that hands freed memory back to its host (free page reporting, as on
the box these figures come from), memory touched for the first time costs about a second per
GiB: absolute times swing from run to run, which is why only same-run ratios count.
- pack: ``nbmodelpack.pack(model, example=…)`` (class strategy, the pack-time load check
  included) vs ``safetensors.torch.save_file(model.state_dict())``.
- load: a second load in the process (after a first one, discarded; files in the page cache)
  that touches every byte (sums every tensor) vs ``safetensors.torch.load_file`` + the same touch.
- extra memory: the process's peak RSS during the operation minus its RSS before it
  (pack: the model is already in memory; load: minus the model's own size, which both
  sides must hold), as a fraction of the model.
The store records each blob as verified when pack writes it, so loads map the weights without
re-hashing them. Pack hashes while it writes, on a second thread: on a box whose cores are
busy, the hash (sha256, ~1.65 GiB/s on an idle core; printed below) rather than the disk sets
pack's pace.
Goals: pack ≤ 1.2× save_file, load ≤ 1.2× load_file, extra memory ≤ 10 % of the model,
weights in ≥ 2 layers. Everything written goes under /tmp/big-models-* and is deleted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 4096

# Runs in a fresh process: build the model, reset the peak-RSS mark, time one operation.
CHILD = r"""
import gc, json, os, sys, time
import torch
from wide_net import BenchWide

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := the current RSS

op, layers, width, work, shard = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
peer_file = os.path.join(work, "peer.safetensors")
import safetensors.torch, nbmodelpack
out = {}
if op.startswith("pack"):
    torch.manual_seed(0)
    with torch.no_grad():
        model = BenchWide(layers, width).eval()
    example = torch.randn(2, width)
    nbmodelpack.pack(BenchWide(1, 64), "warm", example=torch.randn(2, 64), metrics=None)  # imports, first calls
    gc.collect()
    before = status("VmRSS")
    reset_peak()
    t = time.perf_counter()
    if op == "pack-ours":
        info = nbmodelpack.pack(model, "big", example=example, shard_size=shard, metrics=None)
        out["layers"] = len(nbmodelpack.get_store().open(info.ref).weight_files())
        out["form"] = info.architecture.get("load")
    elif op == "pack-before":  # an older checkout: no shard_size, one weights file
        info = nbmodelpack.pack(model, "big", example=example, metrics=None)
        out["layers"], out["form"] = 1, info.architecture.get("load")
    else:
        safetensors.torch.save_file(model.state_dict(), peer_file)
    out["seconds"] = time.perf_counter() - t
    out["extra"] = status("VmHWM") - before
else:
    def once():
        if op in ("load-ours", "load-before"):
            tensors = list(nbmodelpack.load("big:latest").state_dict().values())
        else:
            tensors = list(safetensors.torch.load_file(peer_file).values())
        sum(float(x.sum()) for x in tensors)  # touch every byte
        return sum(x.nbytes for x in tensors)
    once()  # the first load (ours verifies the blobs it has not seen yet)
    gc.collect()
    before = status("VmRSS")
    reset_peak()
    t = time.perf_counter()
    model_bytes = once()
    out["seconds"] = time.perf_counter() - t
    out["extra"] = status("VmHWM") - before - model_bytes
print(json.dumps(out))
"""


def _evict(work: Path) -> None:
    """Drop every file the bench wrote from the page cache (they stay on disk)."""
    for path in work.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages cannot be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _fresh_start(op: str, work: Path) -> None:
    """Put both sides in the same state before each measurement.

    pack: the side's own earlier output is deleted (save_file overwrites its file; ours
    would otherwise add a second copy beside its earlier blobs), so each writer finds the
    other's output on disk and nothing of its own. load: every file is dropped from the page
    cache, so each side's first (untimed) load reads its files from disk and its second load
    finds them cached the same way. Without this, a model that with both outputs fills the
    RAM (8 GiB here: model + two 8 GiB files > 23 GiB) leaves cached whichever file was
    written last, and the load comparison measures the pack order.
    """
    if op.startswith("pack-"):
        side = op.split("-", 1)[1]
        if side == "peer":
            (work / "peer.safetensors").unlink(missing_ok=True)
        else:
            shutil.rmtree(work / ("home-before" if side == "before" else "home") / "store", ignore_errors=True)
    else:
        _evict(work)


def run(op: str, layers: int, work: Path, shard: str, before: str | None = None) -> dict[str, Any]:
    code, home = (before, work / "home-before") if op.endswith("-before") and before else (str(ROOT), work / "home")
    _fresh_start(op, work)
    env = {**os.environ, "NBMODELPACK_HOME": str(home), "NBMODELPACK_NO_PROGRESS": "1", "PYTHONPATH": f"{ROOT / 'bench'}:{code}"}
    # cwd: not this checkout, so PYTHONPATH decides which code runs (python -c puts the cwd first).
    proc = subprocess.run([sys.executable, "-c", CHILD, op, str(layers), str(WIDTH), str(work), shard], capture_output=True, text=True, env=env, cwd=work, timeout=3600)
    if proc.returncode:
        raise SystemExit(f"{op} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--shard-size", default=None, help="default: half the model, so even --gib 1 gives >= 2 layers (pack's own default is 2GiB)")
    ap.add_argument("--before", help="another checkout whose code is timed too, in the same run")
    args = ap.parse_args()
    layers = max(2, round(args.gib * 2**30 / (WIDTH * WIDTH * 4)))
    nbytes = layers * WIDTH * WIDTH * 4
    shard = args.shard_size or str(max(nbytes // 2, 1))
    work = Path(tempfile.mkdtemp(prefix="big-models-"))
    for home in ("home", "home-before"):
        (work / home).mkdir()
        # The bench's class is allowed to load by class (no export graph), as a user's own package would be.
        (work / home / "config.toml").write_text('[trust]\nmodules = ["wide_net"]\n')
    print(f"model: {layers} x Linear({WIDTH}, {WIDTH}) = {nbytes / 2**30:.2f} GiB fp32; shard size {shard}; {args.trials} interleaved trials")
    sides = ("ours", "peer", "before") if args.before else ("ours", "peer")
    results: dict[str, list[dict[str, Any]]] = {f"{kind}-{side}": [] for kind in ("pack", "load") for side in sides}
    try:
        for trial in range(args.trials):
            # Who goes first rotates (the disk's write-back and the page cache favour no side).
            order = sides[trial % len(sides) :] + sides[: trial % len(sides)]
            for kind in ("pack", "load"):
                for side in order:
                    results[f"{kind}-{side}"].append(run(f"{kind}-{side}", layers, work, shard, args.before))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(op: str, key: str) -> float:
        return statistics.median(r[key] for r in results[op])

    def ratio(ours: str, peer: str) -> float:
        return statistics.median(a["seconds"] / b["seconds"] for a, b in zip(results[ours], results[peer], strict=True))

    print(f"{'operation':34} {'median s':>9} {'GiB/s':>7} {'extra memory':>14}")
    names = {"pack-ours": "nbmodelpack.pack", "pack-before": "nbmodelpack.pack (before)", "pack-peer": "safetensors save_file",
             "load-ours": "nbmodelpack.load + touch", "load-before": "nbmodelpack.load + touch (before)", "load-peer": "safetensors load_file + touch"}
    for op, label in names.items():
        if op not in results:
            continue
        secs, extra = med(op, "seconds"), med(op, "extra")
        print(f"{label:34} {secs:9.3f} {nbytes / 2**30 / secs:7.2f} {extra / 2**20:9.0f} MiB ({extra / nbytes:5.1%})")
    pack_r, load_r = ratio("pack-ours", "pack-peer"), ratio("load-ours", "load-peer")
    worst_extra = max(med("pack-ours", "extra"), med("load-ours", "extra")) / nbytes
    weight_layers = int(results["pack-ours"][0]["layers"])
    print(f"packed as: {results['pack-ours'][0]['form']}")
    print(f"\npack = {pack_r:.2f}x save_file (goal <= 1.2x); load = {load_r:.2f}x load_file (goal <= 1.2x) [medians of paired ratios]")
    if args.before:
        before_extra = max(med("pack-before", "extra"), med("load-before", "extra")) / nbytes
        print(f"before: pack = {ratio('pack-before', 'pack-peer'):.2f}x save_file; load = {ratio('load-before', 'load-peer'):.2f}x load_file; extra memory <= {before_extra:.1%}")
    print(f"extra memory <= {worst_extra:.1%} of the model (goal <= 10%); weights in {weight_layers} layers (goal >= 2)")
    speed = _sha256_speed()
    print(f"sha256 on this box now: {speed:.2f} GiB/s (pack hashes on a second thread while it writes)")


def _sha256_speed() -> float:
    data = os.urandom(256 << 20)
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    return 0.25 / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
