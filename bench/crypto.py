"""Encrypted bundles against the age CLI: encrypt, and load with the key, on the same bytes in the same run.

    python bench/crypto.py                 # 1 GiB of weights, 3 interleaved trials
    python bench/crypto.py --gib 0.25      # quicker
    python bench/crypto.py --before /work/main   # also time another checkout's code (e.g. main) in the same run

Every timed case runs in a fresh process (torch and safetensors imported before the clock
starts) that samples its memory while it works:
- ``age -e``: ``age -r KEY -o cli.age model.safetensors`` vs ``nbmodelpack.encrypt``
  (reads the stored blob, encrypts, writes and hashes the new blob).
- ``age -d`` + load: ``age -d -o /dev/shm/…`` (tmpfs: RAM, like our memfd; plaintext
  never on disk) then ``safetensors.torch.load_file`` and a sum over every tensor (every
  byte touched), vs ``nbmodelpack.load(ref, identity=key)`` and the same sum. Ours
  re-hashes the ciphertext unless the store recorded it verified.

Memory: the peak, while the case runs, of the process's anonymous memory plus the growth
of the machine's shared memory (``Shmem`` in /proc/meminfo: tmpfs files and memfds, which
hold the plaintext in both cases), minus what it was before. Other processes on the box
move ``Shmem`` too, so treat it as ±50 MiB.

Goal (issue: "encrypted load ≥ 0.8× the speed of age -d + safetensors load"): the
ratio ``age time / our time`` ≥ 0.8, the median over paired trials. CPU seconds (the case's
process and its children) are printed too: on a shared box wall time swings with the
load, and ours spends a second core hashing the ciphertext, which ``age`` does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, resource, subprocess, sys, threading, time
args = json.loads(sys.argv[1])
import torch, safetensors.torch
def shmem():
    for line in open("/proc/meminfo"):
        if line.startswith("Shmem:"):
            return int(line.split()[1]) * 1024
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
base_anon, base_shm = anon(), shmem()
peak = [0]
done = threading.Event()
def sample():
    while not done.wait(0.002):
        peak[0] = max(peak[0], anon() - base_anon + shmem() - base_shm)
watcher = threading.Thread(target=sample, daemon=True)
def touch(tensors):
    return sum(float(t.float().sum()) for t in tensors)
mode = args["mode"]
if mode in ("load", "encrypt"):
    import nbmodelpack
    import nbmodelpack.crypto
def cpu():
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))
watcher.start()
c = cpu()
t = time.perf_counter()
if mode == "age-load":
    subprocess.run(["age", "-d", "-i", args["key"], "-o", args["out"], args["cipher"]], check=True)
    state = safetensors.torch.load_file(args["out"])
    total = touch(state.values())
elif mode == "load":
    model = nbmodelpack.load(args["ref"], identity=args["key"])
    total = touch(model.state_dict().values())
elif mode == "age-encrypt":
    subprocess.run(["age", "-r", args["recipient"], "-o", args["out"], args["plain"]], check=True)
    total = 0
elif mode == "encrypt":
    ref = nbmodelpack.encrypt(args["ref"], recipients=[args["recipient"]]).ref
    total = 0
secs = time.perf_counter() - t
cpu_secs = cpu() - c
peak[0] = max(peak[0], anon() - base_anon + shmem() - base_shm)
done.set()
out = {"secs": secs, "cpu": cpu_secs, "peak": peak[0], "total": total}
if mode == "encrypt":
    out["ref"] = ref
print(json.dumps(out))
"""


def child(args: dict[str, str], code: str, work: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": code, "NBMODELPACK_HOME": str(work / "home"), "NBMODELPACK_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env, cwd=work, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{args['mode']} failed: {proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="weight size in GiB (default 1)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--before", help="another checkout whose code is timed too (e.g. /work/main)")
    opts = parser.parse_args()
    if not shutil.which("age"):
        raise SystemExit("the age CLI is not installed (apt-get install age)")
    work = Path(tempfile.mkdtemp(prefix="nbmodelpack-bench-crypto-"))
    shm = Path(tempfile.mkdtemp(prefix="nbmodelpack-bench-crypto-", dir="/dev/shm"))
    try:
        run(opts.gib, opts.trials, opts.before, work, shm)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


def run(gib: float, trials: int, before: str | None, work: Path, shm: Path) -> None:
    os.environ["NBMODELPACK_HOME"] = str(work / "home")
    os.environ["NBMODELPACK_NO_PROGRESS"] = "1"

    import nbmodelpack

    ours = str(Path(__file__).resolve().parents[1])
    codes = {"ours": ours, **({"before": str(Path(before).resolve())} if before else {})}
    from _nets import pack_square_linear

    info = pack_square_linear(gib)
    size = nbmodelpack.get_store().open(info.ref).descriptor("model.safetensors").size
    mib = size / (1 << 20)
    key, recipient = nbmodelpack.keygen_age(work / "key.txt")
    plain = nbmodelpack.export_files(info.ref, work / "plain") / "model.safetensors"
    print(f"model.safetensors {mib:,.0f} MiB; {trials} interleaved trials; age -d writes to /dev/shm (tmpfs); code: {codes}")

    rows: dict[str, list[dict[str, float]]] = {}
    sealed: dict[str, str] = {}  # each checkout loads what it encrypted (the layer annotations differ)
    for _ in range(trials):
        rows.setdefault("age -r (CLI)", []).append(child({"mode": "age-encrypt", "recipient": recipient, "plain": str(plain), "out": str(work / "cli.age")}, ours, work))
        for label, code in codes.items():
            result = child({"mode": "encrypt", "ref": info.ref, "recipient": recipient}, code, work)
            rows.setdefault(f"nbmodelpack.encrypt [{label}]", []).append(result)
            sealed.setdefault(label, str(result["ref"]))
        out = shm / "model.safetensors"
        rows.setdefault("age -d to tmpfs + load_file + touch", []).append(child({"mode": "age-load", "key": str(key), "cipher": str(work / "cli.age"), "out": str(out)}, ours, work))
        out.unlink()
        for label, code in codes.items():
            rows.setdefault(f"nbmodelpack.load(identity) + touch [{label}]", []).append(child({"mode": "load", "ref": sealed[label], "key": str(key)}, code, work))

    def report(name: str, base: str | None) -> None:
        secs = [r["secs"] for r in rows[name]]
        peak = max(r["peak"] for r in rows[name]) / (1 << 20)
        ratio = ""
        if base:
            paired = [b["secs"] / r["secs"] for b, r in zip(rows[base], rows[name], strict=True)]
            ratio = f"{statistics.median(paired):5.2f}x"
        cpu_ratio = ""
        if base:
            paired = [b["cpu"] / r["cpu"] for b, r in zip(rows[base], rows[name], strict=True)]
            cpu_ratio = f"{statistics.median(paired):5.2f}x"
        med = statistics.median(secs)
        cpu = statistics.median(r["cpu"] for r in rows[name])
        print(f"  {name:48} {med:6.2f} s {mib / med:6.0f} MiB/s {cpu:6.2f} cpu-s  peak +{peak:6.0f} MiB ({peak / mib:4.2f}x)  {ratio:>6} {cpu_ratio:>6}")

    print("\nratios: age CLI wall time / ours, then age CPU time / ours (CPU time is steadier on a busy box); medians of paired trials")
    print("encrypt")
    report("age -r (CLI)", None)
    for label in codes:
        report(f"nbmodelpack.encrypt [{label}]", "age -r (CLI)")
    print("load with the key, every byte touched (goal: ratio >= 0.80)")
    base = "age -d to tmpfs + load_file + touch"
    report(base, None)
    for label in codes:
        report(f"nbmodelpack.load(identity) + touch [{label}]", base)


if __name__ == "__main__":
    sys.exit(main())
