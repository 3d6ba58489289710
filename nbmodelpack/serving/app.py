"""The ASGI app: Open Inference Protocol v2 REST, ``/predict`` and ``/metrics`` for one bundle.

Each worker process builds one app (:func:`create_app`), which loads the model
at startup through :func:`nbmodelpack.load` and batches requests through a
:class:`~nbmodelpack.serving.batching.Batcher`. Every refused request gets a
4xx JSON ``{"error": "..."}``; a failure inside the model gets a 500 of the
same shape and the worker keeps serving.

Metrics use ``prometheus_client`` in multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set (the runner always sets it), so
``/metrics`` on any worker reports the sum over all workers.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ModelPackError, ServingError
from ..version import __version__
from . import codec
from .batching import Batcher
from .codec import BadRequest, Spec

log = logging.getLogger("nbmodelpack.serve")
OPTIONS_ENV = "NBMODELPACK_SERVE_OPTIONS"
TOKEN_ENV = "NBMODELPACK_SERVE_TOKEN"
IDENTITY_ENV = "NBMODELPACK_SERVE_IDENTITY"


@dataclass
class ServeOptions:
    """How to serve one bundle (``modelpack serve`` flags).

    Example:
        >>> ServeOptions(ref="mnist-mlp:1", port=0).host
        '127.0.0.1'
    """

    ref: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    token: str | None = None
    max_batch: int = 32
    max_delay_ms: float = 2.0
    identity: str | None = None
    max_body: int = 8 * 1024 * 1024
    threads: int = 0  # torch threads per worker; 0 = cores / workers

    def to_env(self) -> dict[str, str]:
        """Environment for worker processes; the token and identity travel in their own variables."""
        doc = asdict(self)
        env = {OPTIONS_ENV: json.dumps({k: v for k, v in doc.items() if k not in ("token", "identity")})}
        if self.token:
            env[TOKEN_ENV] = self.token
        if self.identity:
            env[IDENTITY_ENV] = self.identity
        return env

    @classmethod
    def from_env(cls) -> ServeOptions:
        raw = os.environ.get(OPTIONS_ENV)
        if not raw:
            raise ServingError(f"{OPTIONS_ENV} is not set", hint="start the server with `modelpack serve REF`")
        return cls(**json.loads(raw), token=os.environ.get(TOKEN_ENV) or None, identity=os.environ.get(IDENTITY_ENV) or None)


class _Metrics:
    """Request counts, latency and batch sizes (Prometheus)."""

    def __init__(self) -> None:
        import prometheus_client as pc

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = None if self.multiprocess else pc.CollectorRegistry()
        self.requests = pc.Counter("modelpack_requests", "HTTP requests by endpoint and status code", ["endpoint", "code"], registry=self.registry)
        self.latency = pc.Histogram(
            "modelpack_request_seconds", "Time to answer inference requests", ["endpoint"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
        )
        self.batch = pc.Histogram("modelpack_batch_size", "Rows per model call", registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))

    def render(self) -> bytes:
        import prometheus_client as pc
        from prometheus_client import multiprocess

        if self.registry is not None:
            return pc.generate_latest(self.registry)
        registry = pc.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return pc.generate_latest(registry)


class LoadedModel:
    """The served bundle: module, signature, processing; ``run`` is called on the model thread."""

    def __init__(self, options: ServeOptions) -> None:
        import torch

        import nbmodelpack

        self.threads = options.threads or max(1, (os.cpu_count() or 1) // max(1, options.workers))
        torch.set_num_threads(self.threads)
        bundle = nbmodelpack.get_store().open(options.ref)
        self.info = bundle.info
        self.name = bundle.name
        self.version = str(self.info.version if self.info.version is not None else 1)
        sig = bundle.read_json("signature.json", identity=options.identity)
        self.inputs = [Spec(s["name"], s["datatype"], list(s["shape"])) for s in sig.get("inputs", [])]
        self.outputs = [Spec(s["name"], s["datatype"], list(s["shape"])) for s in sig.get("outputs", [])]
        processing = bundle.read_json("processing.json", identity=options.identity) if bundle.has("processing.json") else {}
        self.preprocess: dict[str, Any] | None = processing.get("preprocess")
        self.labels: list[str] | None = processing.get("labels")
        self.softmax = bool((processing.get("postprocess") or {}).get("softmax"))
        self.module = nbmodelpack.load(bundle, identity=options.identity)
        self._torch = torch
        self._bf16 = {s.name for s in self.inputs if s.datatype == "BF16"}

    def init_thread(self) -> None:
        """Run on the model thread: OpenMP's thread count is per thread, so set it there too."""
        self._torch.set_num_threads(self.threads)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = []
        for spec in self.inputs:
            t = torch.from_numpy(inputs[spec.name])
            args.append(t.to(torch.bfloat16) if spec.name in self._bf16 else t)
        rows = args[0].shape[0] if args and args[0].dim() else 1
        with torch.inference_mode():
            out = self.module(*args)
        outs = tuple(out) if isinstance(out, tuple | list) else (out,)
        result = {}
        for spec, t in zip(self.outputs, outs, strict=False):
            t = t.detach().cpu()
            if t.dtype == torch.bfloat16:
                t = t.float()
            if not t.dim() or t.shape[0] != rows:
                raise RuntimeError(f"output {spec.name} has {t.shape[0] if t.dim() else 0} rows for {rows} input rows")
            result[spec.name] = t.numpy()
        return result

    def warm_up(self) -> float:
        """Run a batch of one zero input a few times; return the fastest call in seconds (inf if it fails)."""
        example = {s.name: np.zeros([1 if d == -1 else d for d in s.shape], dtype=codec.DATATYPES[s.datatype]) for s in self.inputs}
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            try:
                self.run(example)
            except Exception:
                return float("inf")
            best = min(best, time.perf_counter() - start)
        return best

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "pytorch",
            "inputs": [asdict(s) for s in self.inputs],
            "outputs": [asdict(s) for s in self.outputs],
        }


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json", headers=headers)


def _error(message: str, status: int) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _json({"error": message}, status, headers)


async def _read_body(request: Request, cap: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``cap`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(length) > cap:
            raise BadRequest(f"body too large (limit {cap} bytes)", 413)
    if request.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
        raise BadRequest("Content-Encoding is not supported; send the body uncompressed", 415)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BadRequest(f"body too large (limit {cap} bytes)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(options: ServeOptions | None = None) -> Starlette:
    """The ASGI app for one bundle (options from the environment when not given).

    Example:
        >>> app = create_app(ServeOptions(ref="mnist-mlp:1"))  # doctest: +SKIP
        >>> uvicorn.run(app, port=8000)  # doctest: +SKIP
    """
    opts = options or ServeOptions.from_env()
    token = opts.token.encode() if opts.token else None
    metrics = _Metrics()
    state: dict[str, Any] = {}

    def model() -> LoadedModel:
        m = state.get("model")
        if m is None:
            raise BadRequest("the model is still loading", 503)
        return m

    def check_name(request: Request) -> LoadedModel:
        m = model()
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name != m.name:
            raise BadRequest(f"unknown model {name[:60]!r} (this server serves {m.name!r})", 404)
        if version is not None and version != m.version:
            raise BadRequest(f"unknown version {version[:20]!r} of {m.name} (this server serves {m.version})", 404)
        return m

    def guarded(endpoint: str, fn: Handler, *, auth: bool = True, timed: bool = False) -> Handler:
        async def handle(request: Request) -> Response:
            start = time.perf_counter()
            try:
                if auth and token is not None:
                    given = request.headers.get("authorization", "")
                    scheme, _, value = given.partition(" ")
                    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token):
                        raise BadRequest("missing or wrong bearer token", 401)
                response = await fn(request)
            except BadRequest as exc:
                response = _error(str(exc), exc.status)
            except Exception:
                log.exception("%s failed", endpoint)
                response = _error("the model failed on this request", 500)
            metrics.requests.labels(endpoint, str(response.status_code)).inc()
            if timed:
                metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            return response

        return handle

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        ok = "model" in state
        return _json({"ready": ok}, 200 if ok else 503)

    async def server_meta(request: Request) -> Response:
        return _json({"name": "nbmodelpack", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def model_meta(request: Request) -> Response:
        return _json(check_name(request).metadata())

    async def model_ready(request: Request) -> Response:
        m = check_name(request)
        return _json({"name": m.name, "ready": True})

    async def infer(request: Request) -> Response:
        m = check_name(request)
        body = await _read_body(request, opts.max_body)
        req = codec.decode_infer(body, request.headers.get("inference-header-content-length"), m.inputs, m.outputs)
        outputs = await state["batcher"].submit(req.inputs)
        if req.outputs is not None:
            outputs = {n: outputs[n] for n in req.outputs}
        payload, headers = codec.encode_infer(m.name, m.version, req.id, outputs, req.binary_outputs)
        media = "application/octet-stream" if headers else "application/json"
        return Response(payload, media_type=media, headers=headers)

    async def predict(request: Request) -> Response:
        m = model()
        if len(m.inputs) != 1 or not m.outputs:
            raise BadRequest("/predict serves models with one input; use /v2/models/NAME/infer")
        spec = m.inputs[0]
        body = await _read_body(request, opts.max_body)
        if not body.strip():
            raise BadRequest('empty body: send {"input": [...]} as JSON, or an image')
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith("multipart/form-data"):
            body = await _multipart_file(request, body)
            image = True
        else:
            image = codec.looks_like_image(body, content_type)
        if image:
            if not m.preprocess:
                raise BadRequest("this model takes JSON input only (its bundle has no image preprocessing)", 415)
            x = codec.decode_image(body, m.preprocess, spec)
        else:
            x = codec.decode_predict_json(body, spec)
        outputs = await state["batcher"].submit({spec.name: x})
        return _json(codec.predictions(outputs[m.outputs[0].name], m.labels, m.softmax))

    async def metrics_page(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        message = "method not allowed" if status == 405 else f"no such endpoint: {request.url.path[:80]}"
        return _error(message, status)

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error("internal server error", 500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            loaded = LoadedModel(opts)
        except ModelPackError as exc:
            # One readable line for the terminal and for `start`, which reports the last `error:` line.
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise
        inline = loaded.warm_up() < 0.002
        batcher = Batcher(
            loaded.run, max_batch=opts.max_batch, max_delay=opts.max_delay_ms / 1000, on_batch=metrics.batch.observe,
            thread_init=loaded.init_thread, inline=inline,
        )
        batcher.start()
        state.update(model=loaded, batcher=batcher)
        log.info("serving %s (%s), batches of up to %d, model on %s", loaded.info.ref, loaded.info.digest[:19], opts.max_batch, "the event loop" if inline else "its own thread")
        try:
            yield
        finally:
            await batcher.close()

    prefixes = ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"]
    routes = [
        Route("/v2/health/live", guarded("health", live, auth=False)),
        Route("/v2/health/ready", guarded("health", ready, auth=False)),
        Route("/v2", guarded("metadata", server_meta)),
        Route("/predict", guarded("predict", predict, timed=True), methods=["POST"]),
        Route("/metrics", guarded("metrics", metrics_page)),
    ]
    for p in prefixes:
        routes += [
            Route(p, guarded("metadata", model_meta)),
            Route(p + "/ready", guarded("health", model_ready)),
            Route(p + "/infer", guarded("infer", infer, timed=True), methods=["POST"]),
        ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found, Exception: server_error})


async def _multipart_file(request: Request, body: bytes) -> bytes:
    """The first uploaded file of a multipart form (the body was already read under the cap)."""
    request._body = body  # Starlette re-reads a cached body when parsing the form
    try:
        form = await request.form(max_files=1, max_fields=16)
    except Exception:  # python-multipart and Starlette raise several types for broken forms
        raise BadRequest("malformed multipart form") from None
    for value in form.values():
        if not isinstance(value, str):
            data = await value.read()
            await form.close()
            return data
    await form.close()
    raise BadRequest("the multipart form has no file; upload the image as a file field")
