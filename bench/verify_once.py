"""Second load + touch of a packed model vs safetensors ``load_file`` + touch, for two code trees.

Run: .venv/bin/python bench/verify_once.py [--gib 1.0] [--repeat 3] [--before /path/to/main]
Each tree (``--before``, default: none; and this checkout) runs in its own process with
its own store: it packs the model (an importable, trusted class), loads it once, then times, best of
``--repeat``, interleaved: ``nbmodelpack.load`` + touching every weight, the same with
``verify=True`` (a full re-hash), and ``safetensors.torch.load_file`` + touch of the very
same blob file. Prints seconds and each load as a ratio to ``load_file`` in that process.
Goal: the second load <= 1.2x load_file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _deep() -> type:
    """A stack of square Linear layers whose init arguments are attributes (so pack records the class)."""
    import torch

    class Deep(torch.nn.Module):
        def __init__(self, depth: int, width: int) -> None:
            super().__init__()
            self.depth, self.width = depth, width
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, width, bias=False) for _ in range(depth))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = block(x)
            return x

    Deep.__qualname__ = "Deep"
    return Deep


if __name__ != "__main__":
    Deep = _deep()


def child(gib: float, repeat: int, work: Path) -> dict[str, float]:
    os.environ["NBMODELPACK_HOME"] = str(work / "home")
    (work / "home").mkdir(parents=True)
    # Load rebuilds the importable class (the fast path a trusted package gets), not the export graph.
    (work / "home" / "config.toml").write_text('[trust]\nmodules = ["verify_once"]\n')
    os.environ["NBMODELPACK_NO_PROGRESS"] = "1"
    import safetensors.torch
    import torch

    sys.path.insert(0, str(HERE / "bench"))
    from verify_once import Deep

    import nbmodelpack

    width = 4096
    layers = max(1, round(gib * 2**30 / (width * width * 4)))
    torch.manual_seed(0)
    with torch.no_grad():
        model = Deep(layers, width).eval()
    nbmodelpack.pack(model, "bench", example=torch.randn(2, width))
    del model
    store = nbmodelpack.get_store()
    blob = store.blob_path(store.open("bench:latest").descriptor("model.safetensors").digest)

    def touch(tensors: object) -> None:
        for t in tensors:  # type: ignore[attr-defined]
            t.sum()

    def timed(fn: object) -> float:
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        return time.perf_counter() - t

    first = nbmodelpack.load("bench:latest")
    assert first.bundle_form == "class", first.bundle_form
    del first
    load = lambda: touch(nbmodelpack.load("bench:latest").parameters())  # noqa: E731
    runs: dict[str, list[float]] = {"nbmodelpack.load + touch": [], "load_file + touch": []}
    verify_ok = "verify" in __import__("inspect").signature(nbmodelpack.load).parameters
    if verify_ok:
        runs["load(verify=True) + touch"] = []
    for _ in range(repeat):
        runs["load_file + touch"].append(timed(lambda: touch(safetensors.torch.load_file(blob).values())))
        runs["nbmodelpack.load + touch"].append(timed(load))
        if verify_ok:
            runs["load(verify=True) + touch"].append(timed(lambda: touch(nbmodelpack.load("bench:latest", verify=True).parameters())))
    return {name: min(times) for name, times in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", help="another checkout (e.g. main) to measure in the same run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.gib, args.repeat, Path(args.child))))
        return
    trees = ([("before", Path(args.before))] if args.before else []) + [("after", HERE)]
    print(f"{args.gib:.2f} GiB fp32, best of {args.repeat}; ratios to load_file + touch in the same process")
    print(f"{'tree':7} {'operation':28} {'seconds':>8} {'vs load_file':>13}")
    for label, tree in trees:
        work = Path(tempfile.mkdtemp(prefix="verify-bench-", dir="/tmp"))
        try:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            cmd = [sys.executable, str(HERE / "bench" / "verify_once.py"), "--gib", str(args.gib), "--repeat", str(args.repeat), "--child", str(work)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        finally:
            shutil.rmtree(work, ignore_errors=True)
        result = json.loads(out.strip().splitlines()[-1])
        ref = result["load_file + touch"]
        for name, secs in result.items():
            print(f"{label:7} {name:28} {secs:8.3f} {secs / ref:12.2f}x")


if __name__ == "__main__":
    main()
