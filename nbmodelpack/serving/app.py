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
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ModelPackError
from ..version import __version__
from . import codec
from .batching import Batcher
from .codec import (
    BadRequest,
    BodyTooLarge,
    NotReady,
    RequestError,
    Unauthorized,
    UnknownModel,
    UnsupportedMedia,
)
from .model import LoadedModel
from .options import IDENTITY_ENV, TOKEN_ENV, ServeOptions

log = logging.getLogger("nbmodelpack.serve")


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


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json", headers=headers)


def _error(message: str, status: int) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _json({"error": message.replace("\n", " ") or "error"}, status, headers)


def one_line(exc: BaseException) -> str:
    """The line a user sees for a failure: a ModelPackError's own text, else the type and first line.

    Example:
        >>> one_line(ValueError("bad\\nworse"))
        'ValueError: bad'
    """
    if isinstance(exc, ModelPackError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


async def _read_body(request: Request, cap: int) -> bytes:
    """The request body, decompressed if sent gzip/deflate; refused with 413 once it passes ``cap`` bytes.

    The cap applies to what the body becomes, so a small compressed bomb is refused
    as early as a large plain body.
    """
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(length) > cap:
            raise BodyTooLarge(f"body too large (limit {cap} bytes)")
    inflate = codec.body_decoder(request.headers.get("content-encoding", ""), cap)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(f"body too large (limit {cap} bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    return inflate(body) if inflate else body


Handler = Callable[[Request], Awaitable[Response]]


def create_app(options: ServeOptions | None = None, *, loaded: LoadedModel | None = None) -> Starlette:
    """The ASGI app for one bundle (options from the environment when not given).

    ``loaded`` is a model the caller built already (the runner's probe, when the
    app runs in the same process); otherwise the app loads it at startup.

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
            raise NotReady(f"the model did not load: {state['failed']}" if "failed" in state else "the model is still loading")
        return m

    def check_name(request: Request) -> LoadedModel:
        m = model()
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name != m.name:
            raise UnknownModel(f"unknown model {name[:60]!r} (this server serves {m.name!r})")
        if version is not None and version != m.version:
            raise UnknownModel(f"unknown version {version[:20]!r} of {m.name} (this server serves {m.version})")
        return m

    def guarded(endpoint: str, fn: Handler, *, auth: bool = True, timed: bool = False) -> Handler:
        async def handle(request: Request) -> Response:
            start = time.perf_counter()
            try:
                if auth and token is not None:
                    given = request.headers.get("authorization", "")
                    scheme, _, value = given.partition(" ")
                    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token):
                        raise Unauthorized("missing or wrong bearer token")
                response = await fn(request)
            except (RequestError, ModelPackError) as exc:
                response = _error(str(exc), exc.http_status)
            except RecursionError:  # a body nested deeper than any parser limit we set
                response = _error("the body is nested too deeply", 400)
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
        if "model" in state:
            return _json({"ready": True})
        return _json({"ready": False, **({"error": state["failed"]} if "failed" in state else {})}, 503)

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
                raise UnsupportedMedia("this model takes JSON input only (its bundle has no image preprocessing)")
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
        m = loaded
        if m is None:
            try:
                m = LoadedModel(opts)
            except Exception as exc:
                # The runner's probe loaded this bundle already, so this is rare (a key or file
                # gone since). One line, and the worker stays up answering not-ready: uvicorn
                # would print a traceback, and a supervisor would restart a dead worker forever.
                state["failed"] = one_line(exc)
                print(f"error: {state['failed']}", file=sys.stderr, flush=True)
                if not isinstance(exc, ModelPackError):
                    log.debug("model load failed", exc_info=True)
                yield
                return
        inline = m.warm_up() < 0.002
        batcher = Batcher(
            m.run, max_batch=opts.max_batch, max_delay=opts.max_delay_ms / 1000, on_batch=metrics.batch.observe,
            thread_init=m.init_thread, inline=inline,
        )
        batcher.start()
        state.update(model=m, batcher=batcher)
        log.info("serving %s (%s), batches of up to %d, model on %s", m.info.ref, m.info.digest[:19], opts.max_batch, "the event loop" if inline else "its own thread")
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


__all__ = ["IDENTITY_ENV", "TOKEN_ENV", "LoadedModel", "ServeOptions", "create_app", "one_line"]
