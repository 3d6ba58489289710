"""The serving pieces without a server: v2 tensor decoding/encoding, image pre-processing, batching."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest

from nbmodelpack.serving import codec
from nbmodelpack.serving.batching import Batcher
from nbmodelpack.serving.codec import BadRequest, Spec
from nbmodelpack.serving.model import signature_specs
from nbmodelpack.serving.runner import ServeOptions, check, is_loopback

IN = [Spec("input", "FP32", [-1, 1, 28, 28])]
OUT = [Spec("output", "FP32", [-1, 10]), Spec("features", "FP32", [-1, 4])]


def _request(**tensor: object) -> bytes:
    base = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}
    base.update(tensor)
    return json.dumps({"inputs": [base]}).encode()


def test_v2_binary_tensor_extension_round_trips():
    x = np.arange(2 * 784, dtype=np.float32).reshape(2, 1, 28, 28)
    head = json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}], "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    req = codec.decode_infer(head + x.tobytes(), str(len(head)), IN, OUT)
    assert np.array_equal(req.inputs["input"], x) and req.outputs == ["output"] and req.binary_outputs == {"output"}
    y = np.ones((2, 10), dtype=np.float32)
    body, headers = codec.encode_infer("m", "1", None, {"output": y}, {"output"})
    n = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(body[:n])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == y.nbytes
    assert np.array_equal(np.frombuffer(body[n:], dtype="<f4").reshape(2, 10), y)


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (_request(datatype="FP16", data=[1e6] * 784), None, "the model takes FP32"),
        (_request(shape=[1, 1, 28, -28]), None, "non-negative integers"),
        (_request(data=[True, "x"] * 392), None, "not FP32"),
        (_request(data=[[0.5] * 783, [0.5]]), None, "ragged"),
        (_request(name="other"), None, "not an input of this model"),
        (_request(shape=[0, 1, 28, 28], data=[]), None, "empty batch"),
        (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}], "outputs": [{"name": "nope"}]}).encode(), None, "unknown output"),
        (_request(), "9999999", "does not fit the body"),
        (b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}', None, "binary_data_size"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty list"),
    ],
)
def test_bad_v2_requests_are_refused_with_a_clear_message(body, header, message):
    with pytest.raises(BadRequest, match=None) as err:
        codec.decode_infer(body, header, IN, OUT)
    assert message in str(err.value) and err.value.http_status == 400


def test_integer_and_half_inputs_are_range_checked():
    assert codec.to_array([1, 2, 255], "UINT8", "x").dtype == np.uint8
    with pytest.raises(BadRequest, match="out of range for UINT8"):
        codec.to_array([256], "UINT8", "x")
    with pytest.raises(BadRequest, match="non-integer numbers"):
        codec.to_array([1.5], "INT64", "x")
    with pytest.raises(BadRequest, match="overflows FP16"):
        codec.to_array([1e6], "FP16", "x")
    assert codec.to_array([True, False], "BOOL", "x").dtype == np.bool_
    assert codec.to_array(["a", "b"], "BYTES", "x").dtype == object


def test_image_preprocessing_follows_processing_json():
    from PIL import Image

    from nbmodelpack.pytorch.data import MNIST_MEAN, MNIST_PREPROCESS, MNIST_STD

    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[10:18, 12:16] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    x = codec.decode_image(buf.getvalue(), MNIST_PREPROCESS, IN[0])
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    expected = (pixels / 255 - MNIST_MEAN) / MNIST_STD
    assert np.allclose(x[0, 0], expected, atol=1e-5)
    inverted = codec.decode_image(buf.getvalue(), {**MNIST_PREPROCESS, "invert": True, "layout": "flat"}, Spec("input", "FP32", [-1, 784]))
    assert inverted.shape == (1, 784) and np.isclose(inverted[0, 0], (1 - MNIST_MEAN) / MNIST_STD, atol=1e-5)
    with pytest.raises(BadRequest, match="not a readable image"):
        codec.decode_image(b"\x89PNG\r\n\x1a\n broken", MNIST_PREPROCESS, IN[0])


def test_predictions_use_labels_and_softmax():
    logits = np.array([[0.0, 3.0, 1.0]], dtype=np.float32)
    one = codec.predictions(logits, ["cat", "dog", "owl"], True)
    assert one["prediction"] == "dog" and abs(sum(one["probabilities"].values()) - 1) < 1e-5
    assert codec.predictions(np.vstack([logits, logits]), None, False)["predictions"][1]["prediction"] == "1"


def test_batcher_groups_concurrent_requests_splits_results_and_isolates_a_failure():
    calls: list[int] = []

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return {"y": x * 2}

    async def main() -> list[object]:
        b = Batcher(run, max_batch=8, max_delay=0.05)
        b.start()
        try:
            jobs = [b.submit({"x": np.full((1, 3), i, dtype=np.float32)}) for i in range(5)]
            jobs.append(b.submit({"x": np.full((2, 3), -1, dtype=np.float32)}))
            return await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            await b.close()

    results = asyncio.run(main())
    for i, r in enumerate(results[:5]):
        assert isinstance(r, dict) and np.array_equal(r["y"], np.full((1, 3), 2 * i, dtype=np.float32))
    assert isinstance(results[5], ValueError)
    assert calls[0] == 7  # one batch of all 7 rows first, then each request alone to find the bad one
    assert max(calls) <= 8


def test_non_loopback_without_token_is_refused_before_anything_starts():
    from nbmodelpack.errors import ServingError

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    with pytest.raises(ServingError, match="without a token"):
        check(ServeOptions(ref="whatever:1", host="0.0.0.0"))


@pytest.mark.parametrize("depth", [100, 1_100, 10_000, 100_000])
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_json_nested_ten_thousand_deep_is_a_400_not_a_crash(depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    body = opener * depth + b"1" + closer * depth
    for decode in (lambda: codec.decode_infer(body, None, IN, OUT), lambda: codec.decode_predict_json(body, IN[0])):
        with pytest.raises(BadRequest) as err:
            decode()
        assert err.value.http_status == 400 and "\n" not in str(err.value)
    deep_input = b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": ' + b"[" * depth + b"1" + b"]" * depth + b"}]}"
    with pytest.raises(BadRequest):
        codec.decode_infer(deep_input, None, IN, OUT)


def test_each_refusal_names_its_http_status():
    from nbmodelpack.serving.codec import (
        BodyTooLarge,
        NotReady,
        RequestError,
        Unauthorized,
        UnknownModel,
        UnsupportedMedia,
    )

    statuses = {cls.__name__: cls("x").http_status for cls in (BadRequest, BodyTooLarge, UnsupportedMedia, Unauthorized, UnknownModel, NotReady)}
    assert statuses == {"BadRequest": 400, "BodyTooLarge": 413, "UnsupportedMedia": 415, "Unauthorized": 401, "UnknownModel": 404, "NotReady": 503}
    assert all(issubclass(cls, RequestError) for cls in (BadRequest, NotReady))


@pytest.mark.parametrize(
    "sig",
    [
        [],
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]},
        {"inputs": [{"name": "x", "datatype": "FP32"}], "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]},
        {"inputs": [{"name": 3, "datatype": "FP32", "shape": [1]}], "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]},
        {"inputs": [{"name": "x", "datatype": "os:system", "shape": [1]}], "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [[1]]}], "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]},
        {"inputs": ["x"], "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]},
    ],
)
def test_a_malformed_bundle_signature_is_refused_in_one_line(sig):
    from nbmodelpack.errors import ModelPackError

    with pytest.raises(ModelPackError) as err:
        signature_specs(sig, "m:1")
    assert "m:1" in str(err.value) and "\n" not in str(err.value)


def test_a_worker_whose_model_fails_to_load_answers_not_ready_in_one_line(capfd):
    from starlette.testclient import TestClient

    from nbmodelpack.serving.app import create_app

    with TestClient(create_app(ServeOptions(ref="nothing:1"))) as client:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "error": "bundle not found: nothing:1 (run `modelpack ls` to see what exists)"}
        infer = client.post("/v2/models/nothing/infer", content=b"{}")
        assert infer.status_code == 503 and infer.json() == {"error": "the model did not load: bundle not found: nothing:1 (run `modelpack ls` to see what exists)"}
        assert client.get("/v2/health/live").status_code == 200
    err = capfd.readouterr().err
    assert err.strip() == "error: bundle not found: nothing:1 (run `modelpack ls` to see what exists)"


@pytest.mark.parametrize("name", ["Has Space", "UPPER", "-leading", "x" * 64])
def test_a_model_name_clients_cannot_use_in_a_url_is_one_line(name: str) -> None:
    from nbmodelpack.commands.spelling import spell
    from nbmodelpack.errors import UsageError
    from nbmodelpack.serving.options import validate

    with pytest.raises(UsageError, match="model_name=") as err:
        validate(ServeOptions(ref="m:1", model_name=name))
    assert "\n" not in str(err.value)
    assert spell(str(err.value), "modelpack").startswith("--model-name ")  # as the CLI and the magic say it


def test_docker_auth_config_that_is_not_json_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbmodelpack.errors import UsageError
    from nbmodelpack.remote.credentials import AUTH_CONFIG_ENV, read_credentials

    monkeypatch.setenv(AUTH_CONFIG_ENV, "{not json")
    with pytest.raises(UsageError, match="DOCKER_AUTH_CONFIG is not valid JSON") as err:
        read_credentials("registry.example:5000")
    assert "\n" not in str(err.value)
    monkeypatch.setenv(AUTH_CONFIG_ENV, '{"auths": {"registry.example:5000": {"auth": "dTpw"}}}')  # u:p
    creds = read_credentials("registry.example:5000")
    assert creds is not None and (creds.username, creds.password) == ("u", "p")
