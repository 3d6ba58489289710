"""Benchmark: `modelpack serve` vs the seed's Flask `/predict` app (single process, and gunicorn -w 2).

Same MNIST MLP (packed once), same machine (2 cores shared by server and client),
same load: ApacheBench (`ab`, apache2-utils) with 16 concurrent keep-alive
connections for a fixed duration (closed loop), in interleaved rounds, each request one MNIST test
image as `{"input": [[[[...]]]]}` to `/predict`, loopback only.
Prints req/s, p50 and p99 for each, and the ratios against the best Flask setup.

    python bench/serve.py [--seconds 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


class BenchMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, body: bytes, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{url} not ready")


def ab(url: str, body_file: Path, seconds: float, concurrency: int, tmp: Path) -> dict[str, float]:
    pct = tmp / "pct.csv"
    cmd = ["ab", "-q", "-k", "-c", str(concurrency), "-t", str(seconds), "-n", "10000000", "-p", str(body_file), "-T", "application/json", "-e", str(pct), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    with open(pct) as f:
        rows = {int(r[0]): float(r[1]) for r in csv.reader(f) if r and r[0].isdigit()}
    return {"rps": rps, "p50": rows[50], "p99": rows[99], "failed": failed + (int(non2xx.group(1)) if non2xx else 0)}


def start(cmd: list[str], env: dict[str, str], url: str, body: bytes) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
    wait_ready(url, body, proc)
    return proc


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="length of one ab run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per server (median reported)")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("ab") is None:
        sys.exit("needs ab (Debian package apache2-utils)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    os.environ["NBMODELPACK_HOME"] = str(tmp / "home")
    os.environ["NBMODELPACK_NO_PROGRESS"] = "1"
    import nbmodelpack
    from nbmodelpack.pytorch.data import MNIST_PREPROCESS, mnist, mnist_loaders, normalize

    torch.manual_seed(0)
    train, _ = mnist_loaders(n_train=8000)
    model = BenchMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for x, y in train:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    images, _ = mnist()
    example = normalize(images[:1])
    info = nbmodelpack.pack(model, "bench-mlp", example=example, labels=range(10), preprocess=MNIST_PREPROCESS)
    body = json.dumps({"input": example.tolist()}).encode()
    body_file = tmp / "body.json"
    body_file.write_bytes(body)
    env = dict(os.environ, MODEL_REF=info.ref, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    bin_dir = Path(sys.executable).parent
    print(f"MNIST MLP {info.ref}; {os.cpu_count()} cores shared with the client; ab -k -c {args.concurrency}, {args.rounds} interleaved rounds of {args.seconds:.0f} s per server (medians)\n")
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}/predict"
        servers["flask (1 process)"] = (url, start([sys.executable, "bench/baselines/flask_seed.py", str(port)], dict(env, TORCH_THREADS="2"), url, body))
        port = free_port()
        url = f"http://127.0.0.1:{port}/predict"
        gunicorn = [str(bin_dir / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}", "--chdir", "bench/baselines", "flask_seed:app"]
        servers["flask on gunicorn -w 2"] = (url, start(gunicorn, dict(env, TORCH_THREADS="1"), url, body))
        port = free_port()
        url = f"http://127.0.0.1:{port}/predict"
        ours = [sys.executable, "-m", "nbmodelpack", "serve", info.ref, "--port", str(port), "--workers", "2"]
        servers["modelpack serve --workers 2"] = (url, start(ours, env, url, body))
        for url, _ in servers.values():
            ab(url, body_file, 2, args.concurrency, tmp)  # warm-up
        # Interleave short rounds so that load from elsewhere on the machine hits every server alike.
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in servers}
        for _ in range(args.rounds):
            for name, (url, _) in servers.items():
                runs[name].append(ab(url, body_file, args.seconds, args.concurrency, tmp))
    finally:
        for _, proc in servers.values():
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
    results = {}
    for name, rs in runs.items():
        r = {k: median([x[k] for x in rs]) for k in ("rps", "p50", "p99")}
        r["failed"] = sum(x["failed"] for x in rs)
        results[name] = r
        print(f"{name:<28} {r['rps']:>9.0f} req/s   p50 {r['p50']:>6.2f} ms   p99 {r['p99']:>6.2f} ms   failed {r['failed']:.0f}", flush=True)
    flask_names = [n for n in results if n.startswith("flask")]
    best = max(flask_names, key=lambda k: results[k]["rps"])
    ours_r = results["modelpack serve --workers 2"]
    ratio = ours_r["rps"] / results[best]["rps"]
    p99_ratio = ours_r["p99"] / results[best]["p99"]
    print(f"\nthroughput vs best Flask ({best}): {ratio:.2f}x (goal >= 1.5x)")
    print(f"p99 vs best Flask: {p99_ratio:.2f}x (goal <= 1.0x)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
