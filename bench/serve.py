"""Benchmark: `modelpack serve` and `modelpack serve --engine ray` vs the seed's Flask `/predict` app.

Same MNIST MLP (packed once), same machine (2 cores shared by servers and client),
same load: ApacheBench (`ab`, apache2-utils) with 16 concurrent keep-alive
connections for a fixed duration (closed loop), in interleaved rounds, each request
1 or 32 MNIST test images as `{"input": [[[[...]]]]}` to `/predict`, loopback only.
Servers: Flask (single process, and gunicorn -w 2), ours (--workers 2), Ray Serve
(--engine ray --replicas 2, Ray's HTTP proxy and @serve.batch). The seed app runs the
whole batch but answers with the first image's prediction only.
Prints req/s, p50 and p99 for each, and the ratios against the best Flask setup.

    python bench/serve.py [--seconds 5] [--rounds 3] [--concurrency 16] [--sizes 1,32] [--no-ray]
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
    parser.add_argument("--sizes", default="1,32", help="images per request, comma-separated")
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray Serve row")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
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
    info = nbmodelpack.pack(model, "bench-mlp", example=normalize(images[:1]), labels=range(10), preprocess=MNIST_PREPROCESS)
    bodies: dict[int, Path] = {}
    for n in sizes:
        bodies[n] = tmp / f"body-{n}.json"
        bodies[n].write_bytes(json.dumps({"input": normalize(images[:n]).tolist()}).encode())
    env = dict(os.environ, MODEL_REF=info.ref, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    bin_dir = Path(sys.executable).parent
    print(f"MNIST MLP {info.ref}; {os.cpu_count()} cores shared with the client; ab -k -c {args.concurrency}, {args.rounds} interleaved rounds of {args.seconds:.0f} s per server (medians)\n")
    ours, ray_name = "modelpack serve --workers 2", "ray serve --replicas 2"
    servers: dict[str, str] = {}
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:

        def start(name: str, cmd: list[str], port: int, threads: str | None = None, timeout: float = 90) -> None:
            url = f"http://127.0.0.1:{port}/predict"
            ready = answers(url, data=bodies[sizes[0]].read_bytes(), headers={"Content-Type": "application/json"})
            stack.enter_context(running(cmd, env=dict(env, TORCH_THREADS=threads) if threads else env, ready=ready, cwd=ROOT, timeout=timeout, log=tmp / f"{port}.log"))
            servers[name] = url

        port = free_port()
        start("flask (1 process)", [sys.executable, "bench/baselines/flask_seed.py", str(port)], port, threads="2")
        port = free_port()
        gunicorn = [str(bin_dir / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}", "--chdir", "bench/baselines", "flask_seed:app"]
        start("flask on gunicorn -w 2", gunicorn, port, threads="1")
        port = free_port()
        start(ours, [sys.executable, "-m", "nbmodelpack", "serve", info.ref, "--port", str(port), "--workers", "2"], port)
        if not args.no_ray:
            port = free_port()
            start(ray_name, [sys.executable, "-m", "nbmodelpack", "serve", info.ref, "--port", str(port), "--engine", "ray", "--replicas", "2"], port, timeout=240)
        for url in servers.values():
            for n in sizes:
                ab(url, bodies[n], 2, args.concurrency, tmp)  # warm-up
        # Interleave short rounds so that load from elsewhere on the machine hits every server alike.
        for _ in range(args.rounds):
            for n in sizes:
                for name, url in servers.items():
                    runs.setdefault((name, n), []).append(ab(url, bodies[n], args.seconds, args.concurrency, tmp))
    for n in sizes:
        print(f"{n} image(s) per request")
        results = {}
        for name in servers:
            rs = runs[(name, n)]
            r = {k: median([x[k] for x in rs]) for k in ("rps", "p50", "p99")}
            r["failed"] = sum(x["failed"] for x in rs)
            results[name] = r
            print(f"  {name:<28} {r['rps']:>9.0f} req/s   p50 {r['p50']:>7.2f} ms   p99 {r['p99']:>7.2f} ms   failed {r['failed']:.0f}", flush=True)
        best = max((k for k in results if k.startswith("flask")), key=lambda k: results[k]["rps"])
        for name in (ours, ray_name):
            if name in results:
                r = results[name]
                print(f"  {name} vs best Flask ({best}): throughput {r['rps'] / results[best]['rps']:.2f}x, p99 {r['p99'] / results[best]['p99']:.2f}x")
        if ray_name in results:
            r = results[ray_name]
            print(f"  {ray_name} vs {ours}: throughput {r['rps'] / results[ours]['rps']:.2f}x, p99 {r['p99'] / results[ours]['p99']:.2f}x")
        print()
    print("goals for ours vs best Flask at 1 image: throughput >= 1.5x, p99 <= 1.0x")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
