"""The adversarial campaign: crafted bundles × doors, byte flips, kill -9, concurrent writers, server fuzz, bombs.

    python bench/hostile.py          # small sizes (a minute or two on 2 cores)
    python bench/hostile.py --full   # the issue's sizes: 1,000+ flips, 50+ kills, 1,500+ requests, 1 GiB bombs

Prints one table. The goals (every "bad" column 0; bombs under 100 MB above
baseline) are those of the security issue; the crafted bundles and door
drivers are the standing suite's (``tests/hostile/``). Everything runs in a
temporary directory, servers bind 127.0.0.1, every loop is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path[:0] = [str(ROOT), str(TESTS), str(TESTS / "e2e")]

from processes import free_port, running  # noqa: E402  (the tests' one server runner)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, NBMODELPACK_HOME=str(home), NBMODELPACK_NO_PROGRESS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@contextlib.contextmanager
def _home(work: Path, name: str) -> Iterator[Path]:
    """Point this process at a fresh nbmodelpack home for the duration."""
    home = work / name
    home.mkdir()
    old = os.environ.get("NBMODELPACK_HOME")
    os.environ["NBMODELPACK_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("NBMODELPACK_HOME", None)
        else:
            os.environ["NBMODELPACK_HOME"] = old


def _pack_good(store: Path) -> dict[str, Any]:
    import torch

    import nbmodelpack

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    nbmodelpack.pack(model, "good", example=torch.zeros(1, 8), store=str(store))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- 1. crafted bundles × doors --------------------------------------------------------------
def crafted_doors(work: Path, sizes: dict[str, int]) -> dict[str, Any]:
    import torch
    from hostile.craft import SENTINEL_ENV, craft_all, read_base
    from hostile.deliver import plant, sentinels_present
    from hostile.doors import SMALL_CASES, api_steps, clean, cli_steps, judge

    import nbmodelpack

    sentinels = work / "sentinels"
    sentinels.mkdir()
    os.environ[SENTINEL_ENV] = str(sentinels)
    factory = work / "factory"
    _pack_good(factory)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x))

    nbmodelpack.pack(Net(), "exp", example=torch.zeros(1, 8), store=str(factory))
    cases = {c.case: c for c in craft_all(read_base(factory, "good:1"), read_base(factory, "exp:1"), sentinels, huge_manifest=sizes["manifest"], bomb=sizes["bomb"])}
    runs = executions = bad = 0
    notes: list[str] = []
    for name in SMALL_CASES:
        case = cases[name]
        with _home(work, f"victim-{name}") as home:
            shutil.copytree(factory, home / "store")
            plant(home / "store", case)
            out = home / "out"
            out.mkdir()
            for step, loads, leftover in [*api_steps(case.ref, out, torch.zeros(1, 8)), *cli_steps(case.ref, out)]:
                outcome = step()
                runs += 1
                ran = sentinels_present(sentinels)
                executions += bool(ran)
                problems = judge(outcome, must_fail=loads and case.expect == "refuse", must_load=loads and case.expect == "loads", leftover=leftover)
                bad += bool(problems)
                if ran or problems:
                    notes.append(f"{name} {outcome.op}: {'ran ' + ','.join(ran) if ran else problems[0]}")
                for p in sentinels.iterdir():
                    p.unlink()
                for mod in ("hostile.sidefx_import", "hostile.sidefx_class"):
                    sys.modules.pop(mod, None)
                clean(out)
    return {"check": "crafted bundles x doors (API, CLI)", "runs": runs, "bad": executions, "also": f"{bad} not refused/not one line", "notes": notes}


# ---- 2. single-byte flips ----------------------------------------------------------------------
def flips(work: Path, count: int) -> dict[str, Any]:
    import torch

    import nbmodelpack
    from nbmodelpack.errors import ModelPackError

    rng = random.Random(11)
    with _home(work, "flips") as home:
        weights = _pack_good(home / "store")
        blobs = sorted((home / "store" / "blobs" / "sha256").iterdir())
        silent = crashes = refused = 0
        notes = []
        for _ in range(count):
            path = rng.choice(blobs)
            data = bytearray(path.read_bytes())
            i = rng.randrange(len(data))
            original = data[i]
            data[i] ^= rng.randrange(1, 256)
            path.write_bytes(bytes(data))
            try:
                model = nbmodelpack.load("good:1")
                if not all(torch.equal(model.state_dict()[k], v) for k, v in weights.items()):
                    silent += 1
                    notes.append(f"silent change: {path.name[:12]} byte {i}")
            except ModelPackError:
                refused += 1
            except Exception as exc:  # a crash is a finding, not a reason to stop
                crashes += 1
                notes.append(f"crash {type(exc).__name__}: {str(exc)[:80]}")
            data[i] = original
            path.write_bytes(bytes(data))
    return {"check": "single-byte flips in stored blobs", "runs": count, "bad": silent + crashes, "also": f"{silent} silent, {crashes} crashes, {refused} refused", "notes": notes[:5]}


# ---- 3. kill -9 mid pack / publish / pull -------------------------------------------------------
_WORKER = """
import sys, torch, nbmodelpack
share = sys.argv[1]
nbmodelpack.remote.add_remote("share", "file://" + share) if "share" not in [r.name for r in nbmodelpack.remote.list_remotes()] else None
for i in range(1000):
    m = torch.nn.Linear(64, 64)
    info = nbmodelpack.pack(m, "k", example=torch.zeros(1, 64))
    print("packed", info.ref, flush=True)
    nbmodelpack.publish(info.ref, "share")
    print("published", info.ref, flush=True)
    nbmodelpack.pull(f"share/k:{info.version}", as_name="kp")
    print("pulled", info.ref, flush=True)
"""


def _all_load(home: Path) -> list[str]:
    """Problems of a store after a crash: fsck findings and versions that no longer load."""
    code = (
        "import nbmodelpack\n"
        "bad = [str(p) for p in nbmodelpack.fsck()]\n"
        "for i in nbmodelpack.ls():\n"
        "    try:\n        nbmodelpack.load(i.ref)\n"
        "    except Exception as exc:\n        bad.append(f'{i.ref}: {exc}')\n"
        "print('\\n'.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(home), capture_output=True, text=True, timeout=300)
    return [ln for ln in proc.stdout.splitlines() if ln.strip()] + ([proc.stderr.strip().splitlines()[-1]] if proc.returncode else [])


def kills(work: Path, count: int) -> dict[str, Any]:
    rng = random.Random(7)
    home = work / "kills"
    share = work / "kills-share"
    share.mkdir(parents=True)
    losses = 0
    notes: list[str] = []
    for _ in range(count):
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(share)], env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        time.sleep(rng.uniform(2.0, 6.0))
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        problems = _all_load(home)
        committed = [ln.split()[1] for ln in out.splitlines() if ln.startswith("packed")]
        if problems:
            losses += 1
            notes.append(f"after {len(committed)} packs: {problems[0][:100]}")
    leftovers = [p.name for p in (home / "store").iterdir() if p.name.startswith(".pull-") or p.name == "staging" and any(p.iterdir())] if (home / "store").exists() else []
    return {"check": "kill -9 mid pack/publish/pull", "runs": count, "bad": losses, "also": f"staging left: {len(leftovers)} dirs (gc removes)", "notes": notes[:5]}


# ---- 4. concurrent writers ------------------------------------------------------------------
_PACKER = """
import sys, torch, nbmodelpack
name, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    info = nbmodelpack.pack(torch.nn.Linear(32, 32), name, example=torch.zeros(1, 32))
    print(info.ref, flush=True)
"""
_CHURN = """
import sys, time, torch, nbmodelpack
from nbmodelpack.errors import ModelPackError
deadline = time.time() + float(sys.argv[1])
i = 0
while time.time() < deadline:
    i += 1
    info = nbmodelpack.pack(torch.nn.Linear(4, 4), "churn", example=torch.zeros(1, 4))
    nbmodelpack.tag(info.ref, f"t{i % 3}")
    nbmodelpack.rm(info.ref)
    nbmodelpack.gc(grace_seconds=0)
"""


def concurrent(work: Path, packers: int, each: int) -> dict[str, Any]:
    home = work / "concurrent"
    procs = [subprocess.Popen([sys.executable, "-c", _PACKER, f"w{i}", str(each)], env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(packers)]
    churn = subprocess.Popen([sys.executable, "-c", _CHURN, str(8 + 3 * each)], env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    refs: list[str] = []
    errors = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        refs += out.split()
        if p.returncode:
            errors.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
    _, err = churn.communicate(timeout=900)
    if churn.returncode:
        errors.append("churn: " + (err.strip().splitlines()[-1] if err.strip() else f"exit {churn.returncode}"))
    problems = _all_load(home)
    listed = subprocess.run([sys.executable, "-c", "import nbmodelpack; print(' '.join(i.ref for i in nbmodelpack.ls()))"], env=_env(home), capture_output=True, text=True, timeout=120).stdout.split()
    lost = [r for r in refs if r not in listed]
    return {"check": "concurrent pack/tag/rm/gc writers", "runs": len(refs), "bad": len(lost) + len(problems) + len(errors), "also": f"{len(lost)} lost, {len(problems)} broken, {len(errors)} writer errors", "notes": (lost + problems + errors)[:5]}


# ---- 5. server fuzz --------------------------------------------------------------------------
def _fuzz_request(rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
    paths = ["/predict", "/v2/models/good/infer", "/v2/models/good", "/v2/models/good/ready", "/v2/health/ready", "/v2/models/%00/infer", "/v2/models/" + "a" * 5000 + "/infer", "/predict?x=" + "%" * 50, "/../../etc/passwd", "/v2/repository/index"]
    bodies: list[Any] = [
        {"input": [[0.0] * 8]}, {"input": "x" * 100}, {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0] * 8}]},
        {"inputs": [{"name": "input", "shape": [-1, 8], "datatype": "FP32", "data": [1] * 3}]}, {"inputs": [{"name": "input", "shape": [10**12, 8], "datatype": "FP32", "data": []}]},
        {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "BYTES", "data": ["a"] * 8}]}, {"instances": [[float("1e308")] * 8]}, {"data": None}, [], 0, "",
        {"input": [[[[[[[[[[1]]]]]]]]]]}, {"input": [1] * 7}, {"inputs": "nope"}, {"inputs": [None]},
    ]
    method = rng.choice(["POST", "POST", "POST", "GET", "PUT", "DELETE", "OPTIONS"])
    path = rng.choice(paths)
    kind = rng.randrange(6)
    headers = {"Content-Type": rng.choice(["application/json", "text/plain", "image/png", "multipart/form-data; boundary=x", "application/octet-stream"])}
    if kind == 0:
        body = json.dumps(rng.choice(bodies)).encode()
    elif kind == 1:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    elif kind == 2:
        body = gzip.compress(json.dumps(rng.choice(bodies)).encode())
        headers["Content-Encoding"] = "gzip"
    elif kind == 3:
        body = b"\x1f\x8b" + os.urandom(64)
        headers["Content-Encoding"] = "gzip"
    elif kind == 4:
        body = b"[" * 100_000 + b"]" * 100_000
    else:
        body = json.dumps(rng.choice(bodies)).encode()[: rng.randrange(1, 20)]
    return method, path, body, headers


def server_fuzz(work: Path, count: int) -> dict[str, Any]:
    import requests

    with _home(work, "fuzz") as home:
        _pack_good(home / "store")
    port = free_port()
    cmd = [sys.executable, "-m", "nbmodelpack", "serve", "good:1", "--port", str(port)]
    rng = random.Random(5)
    five = sent = 0
    notes: list[str] = []
    base = f"http://127.0.0.1:{port}"
    with running(cmd, ready=f"{base}/v2/health/ready", env=_env(home), log=work / "fuzz-server.log", timeout=120), requests.Session() as session:
        for _ in range(count):
            method, path, body, headers = _fuzz_request(rng)
            try:
                r = session.request(method, base + path, data=body, headers=headers, timeout=30)
                sent += 1
                if r.status_code >= 500:
                    five += 1
                    notes.append(f"{r.status_code} {method} {path[:40]} {body[:40]!r}")
            except requests.RequestException as exc:
                five += 1
                notes.append(f"no answer: {method} {path[:40]}: {type(exc).__name__}")
    return {"check": "malformed requests to modelpack serve", "runs": sent, "bad": five, "also": "5xx or no answer", "notes": notes[:5]}


# ---- 6. bombs ----------------------------------------------------------------------------------
def bombs(work: Path, sizes: dict[str, int]) -> list[dict[str, Any]]:
    from hostile.bombs import HostileRegistry, lying_manifest, peak_of
    from hostile.craft import craft_bombs, read_base
    from hostile.deliver import plant, write_layout

    rows = []
    with _home(work, "bombs") as home:
        _pack_good(home / "store")
        base = read_base(home / "store", "good:1")
        cases = {c.case: c for c in craft_bombs(base, huge_manifest=sizes["manifest"], bomb=sizes["bomb"])}
        plant(home / "store", cases["zstd-bomb"])
        share = write_layout(work / "bomb-share", [cases["huge-manifest"]])
        import nbmodelpack

        nbmodelpack.remote.add_remote("huge", share.as_uri())
        manifest, config = lying_manifest(base)
        measured = [
            (f"zstd bomb {sizes['bomb'] >> 20} MiB: load", lambda: peak_of("nbmodelpack.load('h-zstd-bomb:1')")),
            (f"manifest {sizes['manifest'] >> 20} MiB in a share: pull", lambda: peak_of("nbmodelpack.pull('huge/h-huge-manifest:1')")),
        ]
        for what, run in measured:
            r = run()
            rows.append({"check": what, "runs": 1, "bad": int(r["ok"] or bool(r["crash"]) or r["added_mb"] >= 100), "also": f"peak +{r['added_mb']:.0f} MB; {'refused' if not r['ok'] else 'accepted'}", "notes": [r["error"][:100]]})
        with HostileRegistry(manifest, config, blob_body=sizes["stream"], manifest_body=sizes["manifest"]) as reg:
            for tag, what in (("1", f"registry streams {sizes['stream'] >> 20} MiB for 1 KB"), ("huge", f"registry streams a {sizes['manifest'] >> 20} MiB manifest")):
                r = peak_of(f"nbmodelpack.pull('{reg.host}/evil/bomb:{tag}')")
                read = max((n for n in reg.sent.values()), default=0)
                reg.sent.clear()
                # Bad: accepted, crashed, over 100 MB, or read far past the descriptor (4 MiB manifest cap + socket slack).
                over = read > 16 << 20
                rows.append({"check": what, "runs": 1, "bad": int(r["ok"] or bool(r["crash"]) or r["added_mb"] >= 100 or over), "also": f"peak +{r['added_mb']:.0f} MB; read {read >> 20} MiB", "notes": [r["error"][:100]]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes (long: do not run on a shared machine)")
    parser.add_argument("--only", nargs="*", default=None, help="crafted flips kills concurrent fuzz bombs")
    args = parser.parse_args()
    n = {"flips": 1000, "kills": 52, "packers": 6, "each": 4, "fuzz": 1500} if args.full else {"flips": 120, "kills": 3, "packers": 3, "each": 2, "fuzz": 150}
    sizes = {"bomb": 1 << 30, "manifest": 200 << 20, "stream": 1 << 30} if args.full else {"bomb": 256 << 20, "manifest": 32 << 20, "stream": 256 << 20}
    os.environ.setdefault("NBMODELPACK_NO_PROGRESS", "1")
    only = set(args.only or ["crafted", "flips", "kills", "concurrent", "fuzz", "bombs"])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nbmp-hostile-") as tmp:
        work = Path(tmp)
        (work / "sentinels").mkdir()
        steps = [
            ("crafted", lambda: [crafted_doors(work / "crafted", sizes)]),
            ("flips", lambda: [flips(work / "flips", n["flips"])]),
            ("kills", lambda: [kills(work / "kills", n["kills"])]),
            ("concurrent", lambda: [concurrent(work / "concurrent", n["packers"], n["each"])]),
            ("fuzz", lambda: [server_fuzz(work / "fuzz", n["fuzz"])]),
            ("bombs", lambda: bombs(work / "bombs", sizes)),
        ]
        for key, run in steps:
            if key in only:
                (work / key).mkdir()
                t0 = time.time()
                for row in run():
                    row["seconds"] = time.time() - t0
                    rows.append(row)
                    print(f"  {row['check']}: {row['runs']} runs, {row['bad']} bad ({row['also']})", file=sys.stderr, flush=True)
    width = max(len(r["check"]) for r in rows)
    print(f"{'check':<{width}}  {'runs':>6}  {'bad':>4}  {'s':>5}  detail")
    for r in rows:
        print(f"{r['check']:<{width}}  {r['runs']:>6}  {r['bad']:>4}  {r['seconds']:>5.0f}  {r['also']}")
        for note in r["notes"][:3]:
            print(f"{'':<{width}}                      - {note}")


if __name__ == "__main__":
    main()
