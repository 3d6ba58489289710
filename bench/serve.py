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
import contextlib
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from processes import answers, free_port, running  # noqa: E402


class BenchMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
    servers: dict[str, str] = {}
    with contextlib.ExitStack() as stack:

        def start(name: str, cmd: list[str], port: int, threads: str | None = None) -> None:
            url = f"http://127.0.0.1:{port}/predict"
            ready = answers(url, data=body, headers={"Content-Type": "application/json"})
            stack.enter_context(running(cmd, env=dict(env, TORCH_THREADS=threads) if threads else env, ready=ready, cwd=ROOT))
            servers[name] = url

        port = free_port()
        start("flask (1 process)", [sys.executable, "bench/baselines/flask_seed.py", str(port)], port, threads="2")
        port = free_port()
        gunicorn = [str(bin_dir / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}", "--chdir", "bench/baselines", "flask_seed:app"]
        start("flask on gunicorn -w 2", gunicorn, port, threads="1")
        port = free_port()
        start("modelpack serve --workers 2", [sys.executable, "-m", "nbmodelpack", "serve", info.ref, "--port", str(port), "--workers", "2"], port)
        for url in servers.values():
            ab(url, body_file, 2, args.concurrency, tmp)  # warm-up
        # Interleave short rounds so that load from elsewhere on the machine hits every server alike.
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in servers}
        for _ in range(args.rounds):
            for name, url in servers.items():
                runs[name].append(ab(url, body_file, args.seconds, args.concurrency, tmp))
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
