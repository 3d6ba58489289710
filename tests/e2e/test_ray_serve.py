"""Ray Serve end to end: `%modelpack serve REF --engine ray` starts a local Ray head on loopback, real HTTP clients.

One server for the module, started from an IPython shell as a notebook would: an
MNIST MLP deployed as 2 Ray Serve replicas. The
replicas are found among the server's descendant processes by the title Ray gives
them (``ray::ServeReplica:…``); every process the server started is killed at the
end, even on failure.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import torch
from conftest import subprocess_env
from models import MLP
from processes import free_port, running

import nbmodelpack
from nbmodelpack.pytorch.data import MNIST_PREPROCESS, mnist, normalize

pytest.importorskip("ray.serve")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).children(recursive=True)
    return []


def _replicas(pid: int) -> list[psutil.Process]:
    found = []
    for p in _descendants(pid):
        with contextlib.suppress(psutil.Error):
            if p.cmdline() and p.cmdline()[0].startswith("ray::ServeReplica"):
                found.append(p)
    return found


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, torch.nn.Module, subprocess.Popen[bytes]]]:
    home = tmp_path_factory.mktemp("ray-home")
    torch.manual_seed(0)
    model = MLP(hidden=16).eval()
    images, _ = mnist()
    info = nbmodelpack.pack(model, "mnist-mlp", example=normalize(images[:1]), labels=range(10), preprocess=MNIST_PREPROCESS, store=str(home / "store"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A notebook kernel: `%modelpack serve` starts the server in the background (it runs
    # `modelpack serve --engine ray`, which starts the Ray head) and stops it when the kernel dies.
    kernel = (
        "import time\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "sh = InteractiveShell.instance()\n"
        "sh.run_line_magic('load_ext', 'nbmodelpack')\n"
        f"ok = sh.run_cell('%modelpack serve {info.ref} --engine ray --replicas 2 --port {port} --max-delay-ms 5').success\n"
        "while ok:\n"
        "    time.sleep(3600)\n"
    )
    seen: list[psutil.Process] = []
    try:
        with running([sys.executable, "-c", kernel], ready=url + "/v2/health/ready", env=subprocess_env(NBMODELPACK_HOME=str(home)), log=home / "kernel.log", timeout=150) as proc:
            try:
                yield url, model, proc
            finally:
                seen += _descendants(proc.pid)
                proc.kill()  # the kernel dies; its server notices and takes its Ray head down
                psutil.wait_procs(seen, timeout=30)
    finally:
        for p in seen:  # whatever outlived that
            with contextlib.suppress(psutil.Error):
                p.kill()


def test_ray_serve_answers_oip_v2_and_predict_like_the_model(ray_server):
    url, model, _ = ray_server
    x = normalize(mnist()[0][:5])
    expected = model(x).detach().numpy()
    meta = requests.get(url + "/v2/models/mnist-mlp", timeout=30).json()
    name = meta["inputs"][0]["name"]
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.numpy().ravel().tolist()}]}
    r = requests.post(url + "/v2/models/mnist-mlp/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]), expected, rtol=1e-4, atol=1e-5)
    for i in range(2):
        r = requests.post(url + "/predict", json={"input": x[i : i + 1].tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == str(int(expected[i].argmax()))
    # The app's own request decoding: a gzip body and a flat vector, as seed-style clients send.
    packed = gzip.compress(json.dumps({"data": x[0].ravel().tolist()}).encode())
    r = requests.post(url + "/predict", data=packed, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 200 and r.json()["prediction"] == str(int(expected[0].argmax())), r.text
    bad = requests.post(url + "/predict", json={"input": [[1.0, 2.0]]}, timeout=30)
    assert bad.status_code == 400 and "error" in bad.json()


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1
    return (mapped or addr).is_loopback


def test_ray_head_node_and_proxy_listen_on_loopback_only(ray_server):
    _, _, proc = ray_server
    wide: dict[str, list[str]] = {}
    for p in [psutil.Process(proc.pid), *_descendants(proc.pid)]:
        with contextlib.suppress(psutil.Error):
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN and not _loopback(c.laddr.ip):
                    wide.setdefault(f"{p.cmdline()[0]} (pid {p.pid})", []).append(f"{c.laddr.ip}:{c.laddr.port}")
    # Ray Serve 2.60 binds each replica's inter-deployment gRPC server to [::]:0 (behind
    # Ray's token auth) and has no setting for it; everything else is loopback.
    assert {t: a for t, a in wide.items() if not (t.startswith("ray::ServeReplica") and len(a) == 1)} == {}


def test_ray_serve_keeps_answering_when_a_replica_is_killed(ray_server):
    url, model, proc = ray_server
    deadline = time.monotonic() + 60
    while len(_replicas(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    replicas = _replicas(proc.pid)
    assert len(replicas) == 2, [p.cmdline() for p in _descendants(proc.pid)]
    victim = replicas[0]
    x = normalize(mnist()[0][:1])
    want = str(int(model(x).argmax()))
    session = requests.Session()
    # A user's client: retry connection errors and 5xx a few times with backoff.
    retry = requests.adapters.Retry(total=5, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504), allowed_methods=None)
    session.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))
    victim.send_signal(signal.SIGKILL)
    answers = []
    for _ in range(40):
        r = session.post(url + "/predict", json={"input": x.tolist()}, timeout=30)
        answers.append((r.status_code, r.json().get("prediction")))
    assert answers == [(200, want)] * 40
    # Ray replaces the dead replica.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _replicas(proc.pid)
        if len(now) == 2 and victim.pid not in {p.pid for p in now}:
            break
        time.sleep(0.5)
    assert len(_replicas(proc.pid)) == 2 and victim.pid not in {p.pid for p in _replicas(proc.pid)}
    assert session.post(url + "/predict", json={"input": x.tolist()}, timeout=30).json()["prediction"] == want


def test_serve_engine_ray_refuses_bad_scaling_options_in_one_line(tmp_path: Path):
    env = subprocess_env(NBMODELPACK_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "nbmodelpack", "serve", "nope:1", "--engine", "ray", "--min-replicas", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--min-replicas needs --max-replicas" in lines[0], out.stderr
