"""Sidebar list endpoint: ``GET /nbmodelpack/api/bundles`` with 1,000 versions in the store.

Runs a real Jupyter server with the extension and times (median of runs):
  * baseline: ``api.to_json(api.ls())`` in-process (what ``modelpack ls --json`` does)
  * first:  the listing with empty caches (what the server's start-up warm-up pays once)
  * changed: the endpoint right after a cell packed one more version
  * warm:   the endpoint with the store unchanged (cached listing)
  * poll:   ``?since=ETAG`` with the store unchanged (304, what the sidebar sends every 2 s)
and ``GET remotes/R/bundles`` for a remote holding one bundle under 200 tags: a
``file://`` remote, and a real registry (Debian's docker-registry) when installed.
Target: ≤ 300 ms server time for the local list.

    python bench/sidebar.py [--versions 1000] [--tags 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from processes import answers, free_port, running  # noqa: E402


def _fill(versions: int, names: int) -> str:
    """A store with ``versions`` versions spread over ``names`` bundles; returns one ref."""
    import torch
    from torch import nn

    import nbmodelpack
    from nbmodelpack.bundle.draft import Draft

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    first = nbmodelpack.pack(model, "bench-0", example=torch.zeros(1, 1, 28, 28), description="bench bundle")
    store = nbmodelpack.get_store()
    parent = store.open(first.ref).manifest
    for i in range(1, versions):
        draft = Draft.from_parent(parent, name=f"bench-{i % names}", op="copy", params={"i": i})
        store.commit(draft)
    return first.ref


COLD_LISTING = """
import json, time
from nbmodelpack.labapi.views import local_listing
start = time.perf_counter()
json.dumps(local_listing()[1])
print((time.perf_counter() - start) * 1000)
"""


def _get(url: str, token: str) -> tuple[int, float, float, bytes]:
    """(status, server ms from Server-Timing, client ms, body)."""
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            body, status, timing = reply.read(), reply.status, reply.headers.get("Server-Timing", "")
    except urllib.error.HTTPError as exc:
        if exc.code != 304:
            raise
        body, status, timing = b"", 304, ""
    client = (time.perf_counter() - start) * 1000
    server = float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")
    return status, server, client, body


def _one_more_version(i: int) -> None:
    """What a notebook cell packing a new version does to the store."""
    import nbmodelpack
    from nbmodelpack.bundle.draft import Draft

    store = nbmodelpack.get_store()
    parent = store.open("bench-0:1").manifest
    store.commit(Draft.from_parent(parent, name="bench-0", op="copy", params={"extra": i}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--names", type=int, default=50)
    parser.add_argument("--tags", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="nbmodelpack-bench-sidebar-"))
    os.environ["NBMODELPACK_HOME"] = str(tmp / "home")
    os.environ["NBMODELPACK_NO_PROGRESS"] = "1"
    sys.path.insert(0, str(ROOT))
    from nbmodelpack import api

    t0 = time.perf_counter()
    ref = _fill(args.versions, args.names)
    print(f"store: {len(api.ls())} versions of {args.names} bundles (filled in {time.perf_counter() - t0:.1f} s)")

    from nbmodelpack import remote as remote_mod

    remotes: list[str] = ["share"]
    remote_mod.add_remote("share", (tmp / "share").as_uri())
    registry_cm = None
    if shutil.which("docker-registry"):
        from registry_server import running_registry

        os.environ["DOCKER_CONFIG"] = str(tmp / "docker")
        registry_cm = running_registry(tmp / "registry")
        registry = registry_cm.__enter__()
        remote_mod.add_remote("team", f"oci://{registry.host}/bench", insecure=True)
        remote_mod.login("team", registry.user, registry.password)
        remotes.append("team")
    else:
        print("registry: not measured (docker-registry is not installed: apt-get install docker-registry)")
    for name in remotes:
        t0 = time.perf_counter()
        for i in range(args.tags - 2):  # + the version number and latest = args.tags tags
            remote_mod.publish(ref, name, tag=f"t{i}")
        print(f"remote {name}: {ref} published under {args.tags} tags (in {time.perf_counter() - t0:.1f} s)")

    baseline, first = [], []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for _ in range(args.runs):
        start = time.perf_counter()
        api.to_json(api.ls())
        baseline.append((time.perf_counter() - start) * 1000)
        # Empty caches: a fresh process, timed after its imports.
        out = subprocess.run([sys.executable, "-c", COLD_LISTING], env=env, capture_output=True, text=True, check=True).stdout
        first.append(float(out))

    port, token = free_port(), secrets.token_hex(8)
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}", "--port-retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}",
           "--ServerApp.jpserver_extensions={'nbmodelpack.labapi': True}", "--ServerApp.log_level=WARN"]
    base = f"http://127.0.0.1:{port}/nbmodelpack/api"
    server = contextlib.ExitStack()
    try:
        server.enter_context(running(cmd, env=env, ready=answers(f"{base}/remotes", headers={"Authorization": f"token {token}"}), timeout=60))
        _get(f"{base}/bundles", token)
        cold, cold_client, warm, poll = [], [], [], []
        size = 0
        for i in range(args.runs):
            _one_more_version(i)
            status, server_ms, client_ms, body = _get(f"{base}/bundles", token)
            assert status == 200
            cold.append(server_ms)
            cold_client.append(client_ms)
            size = len(body)
            payload = json.loads(body)
            assert sum(len(b["versions"]) for b in payload["bundles"]) == args.versions + i + 1
            status, server_ms, _, _ = _get(f"{base}/bundles", token)
            warm.append(server_ms)
            status, _, client_ms, _ = _get(f"{base}/bundles?since={payload['etag']}", token)
            assert status == 304
            poll.append(client_ms)
        med = statistics.median
        print(f"\nGET bundles, {args.versions} versions ({size / 1e6:.2f} MB JSON), median of {args.runs}:")
        print(f"  baseline api.to_json(api.ls()) in-process : {med(baseline):7.1f} ms")
        print(f"  first, empty caches (start-up warm-up)     : {med(first):7.1f} ms   ratio baseline/first {med(baseline) / med(first):.2f}x")
        print(f"  one version packed, then GET: server time  : {med(cold):7.1f} ms   (client {med(cold_client):.1f} ms)"
              f"   target <= 300 ms: {'OK' if med(cold) <= 300 else 'MISSED'}")
        print(f"  warm (unchanged)      server time          : {med(warm):7.1f} ms")
        print(f"  poll ?since= (304)    client round trip    : {med(poll):7.1f} ms")
        print(f"  ratio baseline / changed server time       : {med(baseline) / med(cold):.2f}x")
        for name in remotes:
            times = []
            for _ in range(args.runs):
                status, server_ms, _, body = _get(f"{base}/remotes/{name}/bundles", token)
                assert status == 200, body
                times.append(server_ms)
            tags = {t for b in json.loads(body)["bundles"] for v in b["versions"] for t in v["tags"]}
            direct = []
            for _ in range(args.runs):
                start = time.perf_counter()
                remote_mod.list_remote(name)
                direct.append((time.perf_counter() - start) * 1000)
            kind = "registry" if name == "team" else "file://"
            print(f"\nGET remotes/{name}/bundles ({kind} remote, {len(tags)} tags): server time median {med(times):.1f} ms;"
                  f" baseline list_remote() in-process {med(direct):.1f} ms, ratio {med(direct) / med(times):.2f}x")
    finally:
        server.close()
        if registry_cm is not None:
            registry_cm.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
