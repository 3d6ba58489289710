"""Ray Serve: one bundle as a Ray Serve application, with the routes and answers of our own server.

Each replica is a Ray Serve deployment whose ASGI ingress is our app
(:func:`nbmodelpack.serving.app.create_app`): the same OIP v2 routes, ``/predict``,
codec, auth and one-line errors. Only the batching is Ray's: ``@serve.batch``
(counting rows, as ours does) gathers the requests of a replica and calls the
model's batched forward on the replica's model thread. Each replica loads the
bundle itself through :class:`~nbmodelpack.serving.model.LoadedModel` (trust
policy, key, allow-listed rebuild), as our workers do, from the local store of
the node it runs on.

Ray keeps a deployment's arguments (here the options, key included) in its
control store; a local head node started here listens on 127.0.0.1 only and has
no dashboard.

Example:
    >>> url = start(ServeOptions(ref="mnist-mlp@sha256:…", engine="ray", replicas=2))  # doctest: +SKIP
    >>> stop_all()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import ServingError, UsageError
from .app import create_app, one_line
from .batching import Arrays
from .model import LoadedModel
from .options import RAY_NOT_INSTALLED, ServeOptions

# Without a cluster to join, the head node started here serves this machine only. With Ray's
# "cluster" switch off, Ray takes 127.0.0.1 as the node's address, and its gRPC servers, agents
# and object manager listen on loopback only (ray.init(_node_ip_address="127.0.0.1") alone is
# turned back into the LAN address). Read when ray is imported, so set before.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault(LOCAL_ONLY_ENV, "0")

try:
    import ray
    from ray import serve
except ModuleNotFoundError as exc:
    if (exc.name or "").split(".")[0] != "ray":
        raise
    raise UsageError(RAY_NOT_INSTALLED) from None

APP_NAME = "modelpack"
TEMP_PREFIX = "modelpack-ray-"  # + the server's pid: a killed server's folder is removed by the next one
_temp_dirs: list[str] = []


def _rows(inputs: Arrays) -> int:
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.ndim else 1


def run_items(run: Any, items: list[Arrays]) -> list[Arrays | Exception]:
    """Run requests through ``run`` as few calls as their shapes allow; one failing request fails alone.

    Requests whose arrays share dtypes and per-row shapes are concatenated into
    one call; the outputs are split back by rows.

    Example:
        >>> double = lambda x: {"y": x["x"] * 2}
        >>> [r["y"].tolist() for r in run_items(double, [{"x": np.ones((1, 2))}, {"x": np.zeros((2, 2))}])]
        [[[2.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]]
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(tuple((k, v.dtype.str, v.shape[1:]) for k, v in item.items()), []).append(i)
    results: list[Arrays | Exception] = [RuntimeError("not run")] * len(items)
    for indices in groups.values():
        _run_group(run, items, indices, results)
    return results


def _run_group(run: Any, items: list[Arrays], indices: list[int], results: list[Arrays | Exception]) -> None:
    first = items[indices[0]]
    try:
        inputs = first if len(indices) == 1 else {k: np.concatenate([items[i][k] for i in indices]) for k in first}
        outputs = run(inputs)
    except Exception as exc:
        if len(indices) == 1:
            results[indices[0]] = exc
            return
        for i in indices:  # find the bad request without failing its neighbours
            _run_group(run, items, [i], results)
        return
    start = 0
    for i in indices:
        rows = _rows(items[i])
        results[i] = {k: v[start : start + rows] for k, v in outputs.items()}
        start += rows


@serve.ingress()
class ModelReplica:
    """One Ray Serve replica: the bundle loaded once, our ASGI app, Ray's batching."""

    def __init__(self, options: ServeOptions) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on shared cores
        self.options = options
        self.model = LoadedModel(options)  # a failure here fails the replica; Ray reports it and retries
        self.max_batch = options.max_batch
        self.inline = self.model.warm_up() < 0.002  # a model this fast costs less on the loop than a thread hop
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelpack-model", initializer=self.model.init_thread)
        batching = cast(Any, self.forward)  # @serve.batch adds these setters to the method
        batching.set_max_batch_size(options.max_batch)
        batching.set_batch_wait_timeout_s(options.max_delay_ms / 1000)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.options, loaded=self.model, batching=lambda m: _RayBatching(self))

    async def _call(self, items: list[Arrays]) -> list[Arrays | Exception]:
        if self.inline:
            return run_items(self.model.run, items)
        return await asyncio.get_running_loop().run_in_executor(self.pool, run_items, self.model.run, items)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, batch_size_fn=lambda items: sum(_rows(i) for i in items))
    async def forward(self, items: list[Arrays]) -> list[Arrays | Exception]:
        return await self._call(items)

    async def submit(self, inputs: Arrays) -> Arrays:
        # Ray refuses an item bigger than a whole batch; ours runs it alone.
        result = (await self._call([inputs]))[0] if _rows(inputs) > self.max_batch else await self.forward(inputs)
        if isinstance(result, Exception):
            raise result
        return result


class _RayBatching:
    """The app's batcher interface over a replica's ``@serve.batch`` method."""

    def __init__(self, replica: ModelReplica) -> None:
        self.replica = replica

    def start(self) -> None:
        pass

    async def submit(self, inputs: Arrays) -> Arrays:
        return await self.replica.submit(inputs)

    async def close(self) -> None:
        self.replica.pool.shutdown(wait=False, cancel_futures=True)


def application(options: ServeOptions) -> Any:
    """The Ray Serve application for ``options.ref`` (bind it with ``serve.run``).

    ``replicas`` fixes the replica count; ``max_replicas`` turns on autoscaling
    between ``min_replicas`` (default 1) and ``max_replicas``, aiming at
    ``target_ongoing`` requests per replica.

    Example:
        >>> serve.run(application(ServeOptions(ref="mnist-mlp:1", replicas=2)), route_prefix="/")  # doctest: +SKIP
    """
    scaling: dict[str, Any]
    if options.max_replicas is not None:
        low = options.min_replicas if options.min_replicas is not None else 1
        scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": options.max_replicas, "target_ongoing_requests": options.target_ongoing}}
        workers = max(1, low)
    else:
        scaling = {"num_replicas": options.replicas}
        workers = options.replicas
    # torch threads per replica: cores / replicas unless --threads says otherwise (as --workers does)
    replica_opts = ServeOptions(**{**options.__dict__, "workers": workers})
    deployment = serve.deployment(
        name=options.ref.split("@")[0].split(":")[0].replace("/", "_")[:60] or "model",
        # Enough requests in flight per replica to fill a batch (Ray's default of 5 would starve it).
        max_ongoing_requests=max(8, 2 * options.max_batch),
        ray_actor_options={"num_cpus": options.threads or 1},
        **scaling,
    )(ModelReplica)
    return deployment.bind(replica_opts)


def _free_port(host: str) -> int:
    # Ray's HTTP proxy needs a fixed port; take one the system says is free now.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def start(options: ServeOptions) -> int:
    """Connect to Ray (``RAY_ADDRESS``, else a new local head on 127.0.0.1), deploy; return the HTTP port.

    A cluster address (``options.ray_address``) is set in ``RAY_ADDRESS`` before
    this module is imported (see :data:`LOCAL_ONLY_ENV`).

    Returns once every replica has loaded the bundle.

    Example:
        >>> port = start(ServeOptions(ref="mnist-mlp@sha256:…", engine="ray"))  # doctest: +SKIP
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    address = os.environ.get("RAY_ADDRESS") or None
    quiet: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if not ray.is_initialized():
        if address:
            ray.init(address=address, **quiet)
        else:
            _remove_stale_temp_dirs()
            temp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
            _temp_dirs.append(temp)
            ray.init(_node_ip_address="127.0.0.1", _temp_dir=temp, **quiet)
    port = options.port or _free_port(options.host)
    serve.start(http_options={"host": options.host, "port": port}, logging_config={"log_level": "WARNING"})
    serve.run(application(options), name=APP_NAME, route_prefix="/")
    return port


def stop_all() -> None:
    """Take the application down: the whole local head if this process started it, else just the app.

    Example:
        >>> stop_all()  # doctest: +SKIP
    """
    with contextlib.suppress(Exception):  # Ray may be half gone already (Ctrl-C, a killed node)
        if not _temp_dirs:  # someone else's cluster: leave it running without our app
            serve.delete(APP_NAME)
    with contextlib.suppress(Exception):
        ray.shutdown()  # a head node started here goes with every process it started
    while _temp_dirs:
        shutil.rmtree(_temp_dirs.pop(), ignore_errors=True)


def _remove_stale_temp_dirs() -> None:
    """Remove the Ray folders of local heads whose server was killed before it could clean up."""
    from .registry import alive

    for path in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        pid = path.name.removeprefix(TEMP_PREFIX).split("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def serve_foreground(options: ServeOptions) -> None:
    """Serve with Ray until Ctrl-C / SIGTERM (or the launching parent exits), listed with ``modelpack servers``.

    The bundle is checked and loaded here once first, as ``modelpack serve`` does,
    so a bundle no replica could load is refused in one line before Ray starts.

    Example:
        >>> serve_foreground(ServeOptions(ref="mnist-mlp:1", engine="ray", replicas=2))  # doctest: +SKIP
    """
    import signal
    import sys
    import threading
    import time

    from .registry import ServerEntry, register
    from .runner import check, probe, url_of, watch_parent

    pinned, shown_ref = check(options)
    options = ServeOptions(**{**options.__dict__, "ref": pinned})
    probe(options)
    done = threading.Event()
    reg = None
    try:
        try:
            port = start(options)
        except Exception as exc:  # Ray's own failures (a node that did not start in time, a replica that died)
            raise ServingError(f"Ray Serve did not start: {one_line(exc)}") from exc
        signal.signal(signal.SIGTERM, lambda *_: done.set())  # after ray.init, which installs its own
        url = url_of(options.host, port)
        replicas = options.max_replicas or options.replicas
        entry = ServerEntry(pid=os.getpid(), url=url, ref=shown_ref, name=shown_ref.rsplit(":", 1)[0], workers=replicas, started=time.time(), token=bool(options.token))
        reg = register(entry)
        scale = f"{options.min_replicas or 1}-{options.max_replicas} replicas (autoscaling)" if options.max_replicas else f"{options.replicas} replica(s)"
        print(f"serving {shown_ref} at {url} on Ray Serve with {scale}; Ctrl-C stops", file=sys.stderr, flush=True)
        watch_parent(done.set)
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if reg is not None:
            reg.unlink(missing_ok=True)
        stop_all()


__all__ = ["APP_NAME", "ModelReplica", "application", "run_items", "serve_foreground", "start", "stop_all"]
