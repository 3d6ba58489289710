"""The model server end to end: real uvicorn workers on free loopback ports, real HTTP clients.

Two servers run for the module: ``mlp`` (an MNIST MLP, 2 workers, no token) and
``lm`` (a tiny embedding model with INT64 input, 1 worker, a bearer token; an
out-of-range token id makes its forward raise, the way a model error looks).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import pytest
import requests
import torch
from conftest import ROOT, subprocess_env
from models import MLP, TiedLM
from processes import running

import nbmodelpack
from nbmodelpack.pytorch.data import MNIST_PREPROCESS, mnist, normalize

pytestmark = pytest.mark.e2e
TOKEN = "s3cret-token-for-tests"
MAX_BODY = 4 * 1024 * 1024


@dataclass
class Running:
    url: str
    proc: subprocess.Popen[bytes]
    ref: str
    home: Path
    log: Path


def _serve_cmd(ref: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "nbmodelpack", "serve", ref, "--port", "0", *args]


def _ready_url(home: Path) -> Callable[[subprocess.Popen[bytes]], bool]:
    """A readiness probe for ``running``: the server registered itself and answers ready."""

    def probe(proc: subprocess.Popen[bytes]) -> bool:
        entry = home / "servers" / f"{proc.pid}.json"
        if not entry.exists():
            return False
        url = json.loads(entry.read_text())["url"]
        return requests.get(url + "/v2/health/ready", timeout=2).status_code == 200

    return probe


def _url(home: Path, proc: subprocess.Popen[bytes]) -> str:
    return str(json.loads((home / "servers" / f"{proc.pid}.json").read_text())["url"])


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-home")


@pytest.fixture(scope="module")
def mlp_model(module_home: Path) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    images, labels = mnist()
    x, y = normalize(images[:6000]), labels[:6000]
    model = MLP(hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(2):
        for i in range(0, len(x), 100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 100]), y[i : i + 100]).backward()
            opt.step()
    model.eval()
    info = nbmodelpack.pack(model, "mnist-mlp", example=x[:1], labels=range(10), preprocess=MNIST_PREPROCESS, store=str(module_home / "store"))
    return model, info.ref


@pytest.fixture(scope="module")
def servers(module_home: Path, mlp_model: tuple[torch.nn.Module, str]) -> Iterator[dict[str, Running]]:
    lm = TiedLM(vocab=50, dim=8)
    lm_info = nbmodelpack.pack(lm, "tiny-lm", example=torch.randint(0, 50, (2, 6)), store=str(module_home / "store"))
    env = subprocess_env(NBMODELPACK_HOME=str(module_home))
    with contextlib.ExitStack() as stack:
        started = {}
        for key, ref, args, extra in (
            ("mlp", mlp_model[1], ("--workers", "2", "--max-body", str(MAX_BODY)), {}),
            ("lm", lm_info.ref, ("--max-delay-ms", "30"), {"NBMODELPACK_SERVE_TOKEN": TOKEN}),
        ):
            log = module_home / f"serve-{key}.log"
            proc = stack.enter_context(running(_serve_cmd(ref, *args), ready=_ready_url(module_home), env={**env, **extra}, log=log, timeout=150))
            started[key] = Running(_url(module_home, proc), proc, ref, module_home, log)
        yield started


def _png(image: torch.Tensor) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.reshape(28, 28).numpy(), mode="L").save(buf, format="PNG")
    return buf.getvalue()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _alive(s: Running) -> None:
    assert s.proc.poll() is None
    headers = AUTH if s.ref.startswith("tiny-lm") else {}
    r = requests.get(s.url + "/v2/health/live", timeout=10)
    assert r.status_code == 200
    assert requests.get(s.url + "/v2", headers=headers, timeout=10).status_code == 200


# ---- interop --------------------------------------------------------------------------------
def test_tritonclient_infer_gets_the_right_class_for_mnist_test_images(servers, mlp_model):
    import tritonclient.http as th

    model, _ = mlp_model
    images, labels = mnist()
    x = normalize(images[9000:9064])
    with torch.no_grad():
        local = model(x).argmax(1).numpy()
    client = th.InferenceServerClient(servers["mlp"].url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mnist-mlp")
    meta = client.get_model_metadata("mnist-mlp")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    for binary in (True, False):  # the binary tensor extension (tritonclient's default) and plain JSON
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x.numpy(), binary_data=binary)
        out = th.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("mnist-mlp", [inp], outputs=[out], request_id=f"req-{binary}", model_version="1")
        predicted = result.as_numpy("output").argmax(1)
        assert (predicted == local).all()
        assert (predicted == labels[9000:9064].numpy()).mean() > 0.8
        assert result.get_response()["id"] == f"req-{binary}"


def test_seed_style_requests_client_posts_json_to_predict(servers, mlp_model):
    model, _ = mlp_model
    images, _ = mnist()
    x = normalize(images[9100:9101])
    r = requests.post(servers["mlp"].url + "/predict", json={"input": x.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prediction"] == str(int(model(x).argmax()))
    assert set(body["probabilities"]) == {str(i) for i in range(10)}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-3
    # Without the batch dimension, and a batch of three.
    assert requests.post(servers["mlp"].url + "/predict", json={"input": x[0].tolist()}, timeout=30).json()["prediction"] == body["prediction"]
    many = requests.post(servers["mlp"].url + "/predict", json={"input": normalize(images[9100:9103]).tolist()}, timeout=30).json()
    assert len(many["predictions"]) == 3 and many["predictions"][0]["prediction"] == body["prediction"]


def test_predict_takes_the_request_shapes_seed_clients_send_and_compressed_bodies(servers, mlp_model):
    import gzip
    import zlib

    model, _ = mlp_model
    images, _ = mnist()
    x = normalize(images[9100:9102])
    expected = [str(int(i)) for i in model(x).argmax(1)]
    flat = x.reshape(2, 784).tolist()
    bodies = {
        "input, flat vectors": {"input": flat},
        "data, flat vectors": {"data": flat},
        "instances, nested": {"instances": x.tolist()},
    }
    for case, doc in bodies.items():
        r = requests.post(servers["mlp"].url + "/predict", json=doc, timeout=30)
        assert r.status_code == 200, (case, r.text)
        assert [p["prediction"] for p in r.json()["predictions"]] == expected, case
    one = requests.post(servers["mlp"].url + "/predict", json={"data": flat[0]}, timeout=30)
    assert one.status_code == 200 and one.json()["prediction"] == expected[0]
    raw = json.dumps({"input": flat}).encode()
    for encoding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        r = requests.post(servers["mlp"].url + "/predict", data=packed, headers={"Content-Type": "application/json", "Content-Encoding": encoding}, timeout=30)
        assert r.status_code == 200, (encoding, r.text)
        assert [p["prediction"] for p in r.json()["predictions"]] == expected


def test_tritonclient_gzip_compressed_infer_request_gets_200(servers, mlp_model):
    import tritonclient.http as th

    model, _ = mlp_model
    images, _ = mnist()
    x = normalize(images[9000:9008])
    client = th.InferenceServerClient(servers["mlp"].url.removeprefix("http://"))
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x.numpy(), binary_data=True)
    result = client.infer("mnist-mlp", [inp], request_compression_algorithm="gzip", response_compression_algorithm="gzip")
    assert (result.as_numpy("output").argmax(1) == model(x).argmax(1).numpy()).all()


def test_predict_takes_png_as_raw_body_and_as_multipart_upload(servers, mlp_model):
    model, _ = mlp_model
    images, _ = mnist()
    for i in (9200, 9201, 9202):
        png = _png(images[i])
        expected = str(int(model(normalize(images[i : i + 1])).argmax()))
        raw = requests.post(servers["mlp"].url + "/predict", data=png, headers={"Content-Type": "image/png"}, timeout=30)
        assert raw.status_code == 200 and raw.json()["prediction"] == expected
        form = requests.post(servers["mlp"].url + "/predict", files={"image": ("digit.png", png, "image/png")}, timeout=30)
        assert form.status_code == 200 and form.json()["prediction"] == expected
    # A JPEG of another size is converted and resized by processing.json.
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(images[9200].reshape(28, 28).numpy()).resize((56, 56)).convert("RGB").save(buf, format="JPEG", quality=95)
    assert requests.post(servers["mlp"].url + "/predict", data=buf.getvalue(), timeout=30).status_code == 200


def test_v2_metadata_versions_outputs_and_flat_or_nested_data(servers):
    url = servers["mlp"].url
    assert requests.get(url + "/v2/health/ready").json() == {"ready": True}
    server_meta = requests.get(url + "/v2").json()
    assert server_meta["name"] == "nbmodelpack" and "binary_tensor_data" in server_meta["extensions"]
    meta = requests.get(url + "/v2/models/mnist-mlp/versions/1").json()
    assert meta["versions"] == ["1"] and meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    assert requests.get(url + "/v2/models/mnist-mlp/versions/1/ready").json() == {"name": "mnist-mlp", "ready": True}
    assert requests.get(url + "/v2/models/mnist-mlp/versions/7").status_code == 404
    flat = np.zeros(2 * 784, dtype=np.float32).tolist()
    nested = np.zeros((2, 1, 28, 28), dtype=np.float32).tolist()
    outs = []
    for data in (flat, nested):
        body = {"id": "x1", "inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": data}], "outputs": [{"name": "output"}]}
        r = requests.post(url + "/v2/models/mnist-mlp/infer", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["id"] == "x1" and doc["model_name"] == "mnist-mlp" and doc["model_version"] == "1"
        assert doc["outputs"][0]["shape"] == [2, 10] and doc["outputs"][0]["datatype"] == "FP32" and len(doc["outputs"][0]["data"]) == 20
        outs.append(doc["outputs"][0]["data"])
    assert outs[0] == outs[1]


# ---- bad input ------------------------------------------------------------------------------
_GOOD = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}


def _with(**changes: object) -> bytes:
    doc = json.loads(json.dumps(_GOOD))
    doc["inputs"][0].update(changes)
    return json.dumps(doc).encode()


BAD = [
    ("malformed JSON", "/v2/models/mnist-mlp/infer", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("JSON nested 10,000 deep", "/v2/models/mnist-mlp/infer", b"[" * 10_000 + b"]" * 10_000, {}, 400, "malformed JSON"),
    ("predict: JSON nested 10,000 deep", "/predict", b'{"input": ' + b"[" * 10_000 + b"1" + b"]" * 10_000 + b"}", {}, 400, "malformed JSON"),
    ("data nested 10,000 deep", "/v2/models/mnist-mlp/infer", _with(data=[]).replace(b'"data": []', b'"data": ' + b"[" * 10_000 + b"]" * 10_000), {}, 400, "malformed JSON"),
    ("wrong shape", "/v2/models/mnist-mlp/infer", _with(shape=[1, 784], data=[0.0] * 784), {}, 400, "shape [1, 784]"),
    ("data does not fit shape", "/v2/models/mnist-mlp/infer", _with(data=[0.0] * 10), {}, 400, "needs 784"),
    ("wrong datatype", "/v2/models/mnist-mlp/infer", _with(datatype="INT64", data=[0] * 784), {}, 400, "the model takes FP32"),
    ("strings as FP32", "/v2/models/mnist-mlp/infer", _with(data=["a"] * 784), {}, 400, "strings"),
    ("NaN", "/v2/models/mnist-mlp/infer", _with(data=[float("nan")] * 784), {}, 400, "NaN"),
    ("empty body", "/v2/models/mnist-mlp/infer", b"", {}, 400, "empty body"),
    ("oversized body", "/v2/models/mnist-mlp/infer", b"[" + b"0," * (MAX_BODY // 2) + b"0]", {}, 413, "too large"),
    ("unknown model", "/v2/models/resnet/infer", _with(), {}, 404, "unknown model"),
    ("unknown endpoint", "/v3/whatever", b"{}", {}, 404, "no such endpoint"),
    ("predict: not an image", "/predict", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, {"Content-Type": "image/png"}, 400, "not a readable image"),
    ("predict: wrong shape", "/predict", json.dumps({"input": [[1.0, 2.0]]}).encode(), {}, 400, "the model takes [-1,1,28,28]"),
    ("predict: NaN", "/predict", b'{"input": [NaN]}', {}, 400, "NaN"),
    ("predict: empty body", "/predict", b"", {}, 400, "empty body"),
    ("predict: no input key", "/predict", b'{"x": 1}', {}, 400, '{"input"'),
    ("predict: two input keys", "/predict", b'{"input": [1], "data": [1]}', {}, 400, '{"instances"'),
    ("predict: flat vector of the wrong size", "/predict", json.dumps({"data": [0.0] * 783}).encode(), {}, 400, "flat vectors"),
    ("gzip bomb", "/predict", __import__("gzip").compress(b'{"input": [' + b"0," * (MAX_BODY // 2) + b"0]}"), {"Content-Encoding": "gzip"}, 413, "once decompressed"),
    ("not gzip data", "/predict", b"plain text", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
    ("unknown encoding", "/v2/models/mnist-mlp/infer", _with(), {"Content-Encoding": "br"}, 415, "send gzip, deflate"),
]


@pytest.mark.parametrize(("case", "path", "body", "headers", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_request_is_a_short_4xx_json_error_and_the_server_keeps_answering(servers, case, path, body, headers, status, message):
    s = servers["mlp"]
    r = requests.post(s.url + path, data=body, headers={"Content-Type": "application/json", **headers}, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error
    assert len(error) < 200 and "Traceback" not in error and "/" not in error.replace("/v3/whatever", "")
    _alive(s)
    assert requests.post(s.url + "/v2/models/mnist-mlp/infer", data=_with(), timeout=30).status_code == 200


def test_missing_or_wrong_token_is_401_and_health_stays_open(servers):
    s = servers["lm"]
    body = {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6]}]}
    path = s.url + "/v2/models/tiny-lm/infer"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
        r = requests.post(path, json=body, headers=headers, timeout=30)
        assert r.status_code == 401 and r.json() == {"error": "missing or wrong bearer token"}
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(s.url + "/metrics", timeout=30).status_code == 401
    assert requests.get(s.url + "/v2/health/ready", timeout=30).status_code == 200
    r = requests.post(path, json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 6, 50]


def test_non_loopback_bind_without_token_is_refused(cli, mlp_model, module_home, monkeypatch):
    monkeypatch.setenv("NBMODELPACK_HOME", str(module_home))
    proc = cli("serve", mlp_model[1], "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert proc.returncode == 1
    assert "refusing to listen on 0.0.0.0 without a token" in proc.stderr and "Traceback" not in proc.stderr


def test_model_error_is_500_and_only_fails_its_own_request_in_a_batch(servers):
    s = servers["lm"]
    path = s.url + "/v2/models/tiny-lm/infer"

    def body(ids: list[int]) -> dict[str, object]:
        return {"inputs": [{"name": "input", "shape": [1, len(ids)], "datatype": "INT64", "data": ids}]}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=AUTH, timeout=30) as client:
            bad = client.post(path, json=body([1, 2, 3, 4, 5, 999]))  # id 999 is outside the embedding
            good = [client.post(path, json=body([1, 2, 3, 4, 5, i])) for i in range(7)]
            return list(await asyncio.gather(bad, *good))

    responses = asyncio.run(burst())
    assert responses[0].status_code == 500 and responses[0].json() == {"error": "the model failed on this request"}
    assert [r.status_code for r in responses[1:]] == [200] * 7
    _alive(s)
    metrics = requests.get(s.url + "/metrics", headers=AUTH, timeout=30).text
    assert 'modelpack_requests_total{code="500",endpoint="infer"} 1.0' in metrics


def test_fuzz_random_bodies_never_get_a_5xx(servers):
    rng = random.Random(7)
    s = servers["mlp"]
    paths = ["/v2/models/mnist-mlp/infer", "/predict", "/v2/models/mnist-mlp/versions/1/infer", "/v2/models/mnist-mlp"]
    atoms = [None, True, False, 0, -1, 1.5, 1e308, -1e308, 2**63, -(2**70), "", "FP32", "input", "\u2603" * 3, [], {}, [[]], [[1], [1, 2]]]

    def value(depth: int = 0) -> object:
        roll = rng.random()
        if depth > 3 or roll < 0.5:
            return rng.choice(atoms)
        if roll < 0.75:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(["name", "shape", "datatype", "data", "inputs", "outputs", "parameters", "id", "input", "x"]): value(depth + 1) for _ in range(rng.randint(0, 4))}

    def body() -> tuple[bytes, dict[str, str]]:
        kind = rng.randrange(7)
        if kind == 6:  # nested far past any parser's limit, alone or inside a tensor
            depth = rng.choice([500, 1_100, 10_000, 50_000])
            deep = (b"[" * depth + b"]" * depth) if rng.random() < 0.5 else (b'{"a":' * depth + b"1" + b"}" * depth)
            raw = rng.choice([deep, _with(data=[]).replace(b'"data": []', b'"data": ' + deep), b'{"input": ' + deep + b"}"])
            return raw, {"Content-Type": "application/json"}
        if kind == 0:
            return rng.randbytes(rng.randint(0, 300)), {"Content-Type": rng.choice(["application/json", "image/png", "application/octet-stream"])}
        if kind == 1:
            return json.dumps(value()).encode(), {"Content-Type": "application/json"}
        doc = json.loads(json.dumps(_GOOD))
        tensor = doc["inputs"][0]
        key = rng.choice(["name", "shape", "datatype", "data", "parameters"])
        tensor[key] = value()
        if kind == 2:
            doc["inputs"].append(dict(tensor))
        if kind == 3:
            doc[rng.choice(["outputs", "parameters", "id"])] = value()
        raw = json.dumps(doc).encode()
        if kind == 4:  # truncate or splice valid JSON
            cut = rng.randrange(len(raw))
            raw = raw[:cut] + rng.randbytes(rng.randint(0, 8)) + raw[cut + rng.randint(0, 20) :]
        headers = {"Content-Type": "application/json"}
        if kind == 5:
            headers["Inference-Header-Content-Length"] = rng.choice(["0", "12", str(len(raw)), "-3", "abc", str(len(raw) + 9)])
            raw += rng.randbytes(rng.randint(0, 64))
        return raw, headers

    statuses: dict[int, int] = {}
    deadline = time.monotonic() + 90
    sent = 0
    with httpx.Client(timeout=30) as client:
        while sent < 1500 and time.monotonic() < deadline:
            raw, headers = body()
            path = rng.choice(paths)
            r = client.post(s.url + path, content=raw, headers=headers)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (path, raw[:300], r.text)
            assert "error" in r.json() or r.status_code == 200
            sent += 1
    assert sent >= 1500, f"only {sent} bodies in 90 s"
    assert sum(v for k, v in statuses.items() if 400 <= k < 500) > 500
    _alive(s)


def test_concurrent_requests_are_batched_and_metrics_show_it(servers):
    s = servers["mlp"]
    body = _with()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            rs = await asyncio.gather(*[client.post(s.url + "/v2/models/mnist-mlp/infer", content=body) for _ in range(64)])
            return [r.status_code for r in rs]

    before = _metric(requests.get(s.url + "/metrics").text, "modelpack_batch_size_count")
    assert asyncio.run(burst()) == [200] * 64
    text = requests.get(s.url + "/metrics").text
    batches = _metric(text, "modelpack_batch_size_count") - before
    assert 0 < batches < 64, f"{batches} model calls for 64 concurrent requests"
    assert "modelpack_request_seconds_bucket" in text and 'modelpack_requests_total{code="200",endpoint="infer"}' in text


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


# ---- notebook verbs, registry, parent death -------------------------------------------------
def test_notebook_serve_verb_starts_lists_and_stops_a_background_server(mlp_model, module_home, monkeypatch):
    from nbmodelpack import commands
    from nbmodelpack.serving import verbs  # noqa: F401 - the serving door registers its verbs
    from nbmodelpack.serving.handle import Server, mnist_png

    class Notebook(commands.Context):
        interactive = True

    monkeypatch.setenv("NBMODELPACK_HOME", str(module_home))
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # the server imports tests/models.py
    server = commands.run(f"serve {mlp_model[1]}", Notebook())
    try:
        assert isinstance(server, Server) and server.url.startswith("http://127.0.0.1:")
        assert f"{server.url}/predict" in server.curl and "curl" in str(server) and server.url in server._repr_html_()
        png, label = mnist_png(9300)
        assert server.predict(png)["prediction"] in {str(i) for i in range(10)}
        listed = commands.run("servers")
        assert server.url in str(listed) and server.pid in [e["pid"] for e in listed.to_json()]
        upload_only = server.widget()
        assert len(upload_only.children[2].children) == 1  # status, curl, then the controls: no demo data unless given
        images, labels = mnist()
        widget = server.widget(samples=(images[:10], labels[:10]))
        assert len(widget.children[2].children) == 2  # upload + sample picker
    finally:
        text = str(commands.run(f"stop {mlp_model[1]}"))
    assert "stopped mnist-mlp:1" in text
    assert server.pid not in [s.pid for s in nbmodelpack.servers()]


def test_stale_registry_entries_are_pruned(module_home, monkeypatch):
    monkeypatch.setenv("NBMODELPACK_HOME", str(module_home))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    entry = {"pid": dead.pid, "url": "http://127.0.0.1:1", "ref": "gone:1", "name": "gone", "workers": 1, "started": 0, "token": False}
    (module_home / "servers").mkdir(exist_ok=True)
    (module_home / "servers" / f"{dead.pid}.json").write_text(json.dumps(entry))
    assert "gone:1" not in [s.ref for s in nbmodelpack.servers()]
    assert not (module_home / "servers" / f"{dead.pid}.json").exists()


def test_background_server_stops_when_its_parent_process_dies(mlp_model, module_home):
    code = (
        "import sys, time, nbmodelpack\n"
        f"srv = nbmodelpack.serve({mlp_model[1]!r})\n"
        "print(srv.pid, srv.url, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], env=subprocess_env(NBMODELPACK_HOME=str(module_home)), stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        pid_text, url = line.split()
        assert requests.get(url + "/v2/health/live", timeout=10).status_code == 200
        parent.kill()  # no atexit: only the server's own parent watch can notice
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid_text}") and _state(int(pid_text)) != "Z":
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{pid_text}") or _state(int(pid_text)) == "Z", "server outlived its parent"
    finally:
        parent.kill()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except OSError:
        return "X"


# ---- containerize ---------------------------------------------------------------------------
def _dockerfile(path: Path) -> tuple[dict[str, str], dict[str, str], list[list[str]], list[str], list[str]]:
    """(ENV, COPY dest → context src, RUN commands, ENTRYPOINT+CMD, HEALTHCHECK CMD) of a Dockerfile."""
    import shlex

    env, copies, runs, entry, cmd, health = {}, {}, [], [], [], []
    for line in path.read_text().splitlines():
        word, _, rest = line.partition(" ")
        if word == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
        elif word == "COPY":
            src, dest = rest.split()
            copies[dest.rstrip("/")] = src.rstrip("/")
        elif word == "RUN":
            runs.append(shlex.split(rest))
        elif word == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "HEALTHCHECK":
            health = json.loads(rest.split(" CMD ", 1)[1])
    return env, copies, runs, entry + cmd, health


def test_containerize_writes_a_context_whose_entrypoint_serves_the_bundle(mlp_model, module_home, tmp_path, monkeypatch):
    import importlib.metadata as md

    import yaml

    monkeypatch.setenv("NBMODELPACK_HOME", str(module_home))
    ctx = tmp_path / "ctx"
    nbmodelpack.containerize(mlp_model[1], ctx)
    dockerfile = (ctx / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile and "USER modelpack" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/v2/health/ready" in dockerfile
    pins = (ctx / "requirements.txt").read_text().split()
    assert all("==" in p for p in pins) and "torch==2.14.1" in pins
    for pin in pins:  # the stand-in environment below satisfies every pin
        name, version = pin.split("==")
        assert md.version(name).split("+")[0] == version, pin
    docs = list(yaml.safe_load_all((ctx / "kserve.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["ServingRuntime", "InferenceService"]
    assert docs[0]["spec"]["protocolVersions"] == ["v2"] and docs[1]["spec"]["predictor"]["model"]["protocolVersion"] == "v2"
    assert docs[0]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for doc in docs:  # KServe's own schemas (tests/data/kserve, generated from its SDK)
        jsonschema.validate(doc, json.loads((ROOT / "tests" / "data" / "kserve" / f"{doc['kind']}.schema.json").read_text()))
    served_as = docs[0]["spec"]["containers"][0]["args"]
    assert served_as[served_as.index("--model-name") + 1] == docs[1]["metadata"]["name"]

    env_vars, copies, runs, command, health = _dockerfile(ctx / "Dockerfile")

    def local(arg: str) -> str:  # a path inside the image → the same file in the context
        for dest, src in sorted(copies.items(), key=lambda kv: -len(kv[0])):
            if arg == dest or arg.startswith(dest + "/"):
                return str(ctx / src) + arg[len(dest) :]
        return arg

    # A fresh venv whose packages come from this test environment through one .pth line
    # (installing torch from requirements.txt is too slow here); nbmodelpack itself comes
    # only from the context's src/ (PYTHONPATH), exactly as in the image.
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    outer = [p for p in sys.path if p.endswith("site-packages")]
    (site / "outer-env.pth").write_text("\n".join(outer) + "\n")
    image_home = tmp_path / "image-home"
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        **{k: local(v) for k, v in env_vars.items()},
        "NBMODELPACK_HOME": str(image_home),
        "NBMODELPACK_SERVE_TOKEN": TOKEN,
    }
    (run_import,) = [r for r in runs if r[:2] == ["modelpack", "import"]]
    launcher = local("/usr/local/bin/modelpack")
    subprocess.run([str(venv / "bin" / "python"), launcher, *[local(a) for a in run_import[1:]]], env=env, check=True, cwd=tmp_path, timeout=120)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import nbmodelpack; print(nbmodelpack.__file__)"], env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(ctx / "src"))

    assert command[:2] == ["modelpack", "serve"] and command[command.index("--host") + 1] == "0.0.0.0"
    args = [local(a) for a in command[1:]]
    args[args.index("--host") + 1] = "127.0.0.1"  # loopback only in tests
    args[args.index("--port") + 1] = "0"
    log = tmp_path / "container.log"
    with running([str(venv / "bin" / "python"), launcher, *args], ready=_ready_url(image_home), env=env, log=log, timeout=150, cwd=tmp_path) as proc:
        url = _url(image_home, proc)
        port = url.rsplit(":", 1)[1]
        check = [str(venv / "bin" / "python") if health[0] == "python" else health[0], *[a.replace(":8080/", f":{port}/") for a in health[1:]]]
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
        images, _ = mnist()
        r = requests.post(url + "/predict", data=_png(images[9400]), headers={"Content-Type": "image/png", **AUTH}, timeout=30)
        assert r.status_code == 200 and r.json()["prediction"] in {str(i) for i in range(10)}
        assert requests.post(url + "/predict", data=_png(images[9400]), timeout=30).status_code == 401


# ---- notebook -------------------------------------------------------------------------------
def test_serve_notebook_runs_top_to_bottom(tmp_path):
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "05-serve.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute(env=subprocess_env())  # type: ignore[no-untyped-call]
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "prediction from a PNG:" in text and "stopped" in text


def _class_only_bundle() -> str:
    """A bundle whose only form is the class ``models:MLP`` (trusted here, so no graph is stored beside it)."""
    info = nbmodelpack.pack(MLP(hidden=4), "class-only", example=torch.zeros(1, 1, 28, 28))
    assert not any(layer["filepath"] == "model.pt2" for layer in info.layers)
    return info.ref


def test_a_server_that_cannot_load_its_model_reports_why(monkeypatch):
    from nbmodelpack.errors import ServingError

    ref = _class_only_bundle()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # tests/models.py, which defines the class, is not importable
    with pytest.raises(ServingError, match=r"the server exited: architecture: cannot import models:MLP"):
        nbmodelpack.serve(ref)


def test_serve_refuses_a_bundle_it_cannot_load_in_one_line_before_any_worker(tmp_path):
    home = tmp_path / "home"
    env = subprocess_env(NBMODELPACK_HOME=str(home))
    setup = (
        "import torch, nbmodelpack\n"
        "from models import MLP\n"
        "nbmodelpack.pack(MLP(hidden=4), 'tiny', example=torch.zeros(1, 1, 28, 28))\n"
        "_, r = nbmodelpack.keygen_age()\n"
        "nbmodelpack.encrypt('tiny:1', recipients=[r])\n"
    )
    subprocess.run([sys.executable, "-c", setup], env=env, check=True, timeout=300)
    (home / "keys" / "age-identity.txt").unlink()  # the key is gone: no worker could decrypt the weights
    proc = subprocess.run([sys.executable, "-m", "nbmodelpack", "serve", "tiny:2", "--port", "0", "--workers", "2"], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: decryption: model.safetensors is encrypted and no age identity was found")
    assert list((home / "servers").glob("*.json")) == []  # it never registered: nothing listened


def test_serve_of_a_bundle_whose_class_cannot_be_imported_is_one_line_not_a_traceback(home):
    # As test_a_server_that_cannot_load_its_model_reports_why, in the foreground: the probe refuses it.
    ref = _class_only_bundle()
    env = {**os.environ, "NBMODELPACK_HOME": str(home), "PYTHONPATH": str(ROOT)}  # tests/models.py is not importable
    proc = subprocess.run([sys.executable, "-m", "nbmodelpack", "serve", ref, "--port", "0"], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 1 and lines == ["error: architecture: cannot import models:MLP: No module named 'models'"], lines
