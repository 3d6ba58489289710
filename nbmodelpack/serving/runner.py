"""Run the server: checks, the start-up probe, socket, worker processes.

``serve`` runs in the foreground (the terminal's ``modelpack serve``); ``start``
launches it as a background process (the notebook's ``%modelpack serve``, the
sidebar's serve action) and waits until it answers ``/v2/health/ready``.

Before any socket or worker exists, ``serve`` does what a worker does once —
open the bundle, apply the trust policy, try the key, rebuild the module through
:func:`nbmodelpack.load` — so a bundle that cannot be served is refused in one
line. ``start`` checks only what needs no torch (options, the bundle's
signature) in the calling process, which may be a Jupyter server; the probe
runs in the child and its one line becomes the error ``start`` raises.

Worker processes are uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``:
spawned workers sharing one listening socket, dead workers replaced); each
worker builds the app with :func:`nbmodelpack.serving.app.create_app` and loads
the model itself. A single worker serves in this process with the probe's model.
Running servers are listed in :mod:`nbmodelpack.serving.registry`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ModelPackError, ServingError
from ..store import get_store
from .options import IDENTITY_ENV, PASSPHRASE_ENV, TOKEN_ENV, ServeOptions, is_loopback, validate
from .registry import ServerEntry, alive, folder, register, servers, stop

PARENT_ENV = "NBMODELPACK_SERVE_PARENT"
_started_here: list[int] = []


def check(options: ServeOptions) -> tuple[str, str]:
    """Refuse unsafe or impossible options and unservable bundles; return ``(ref by digest, shown ref)``.

    Reads JSON only (no torch, no bundle code): the options, and the bundle's
    ``signature.json``, which must name inputs and outputs.

    Example:
        >>> check(ServeOptions(ref="mnist-mlp:1"))  # doctest: +SKIP
        ('mnist-mlp@sha256:…', 'mnist-mlp:1')
    """
    # numpy is the serve extra; the registry functions this module re-exports need none.
    from .model import signature_specs

    validate(options)
    bundle = get_store().open(options.ref)
    if not bundle.has("signature.json"):
        raise ServingError(f"{bundle.info.ref} has no signature.json", hint="pack it with example= so its inputs are known")
    signature_specs(bundle.read_json("signature.json", identity=options.key()), bundle.info.ref)
    return f"{bundle.name}@{bundle.digest}", bundle.info.ref


def probe(options: ServeOptions) -> Any:
    """Load the model once, as a worker will (trust policy, key, rebuild); return the loaded model.

    Example:
        >>> probe(ServeOptions(ref="mnist-mlp:1")).name  # doctest: +SKIP
        'mnist-mlp'
    """
    from .model import LoadedModel

    try:
        return LoadedModel(options)
    except ModelPackError:
        raise
    except Exception as exc:  # a module whose rebuild or forward fails in a way we did not foresee
        from .app import one_line

        raise ServingError(f"cannot load {options.ref}: {one_line(exc)}") from exc


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ServingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="pick another port=PORT, or port=0 for any free one") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    """``http://HOST:PORT`` (IPv6 hosts bracketed; 0.0.0.0 shown as 127.0.0.1 for local calls)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown and not shown.startswith("[") else f"http://{shown}:{port}"


# ---- foreground ----------------------------------------------------------------------------
def serve(options: ServeOptions) -> None:
    """Serve ``options.ref`` in this process until Ctrl-C / SIGTERM (or the launching parent exits).

    Example:
        >>> serve(ServeOptions(ref="mnist-mlp:latest", port=8000))  # doctest: +SKIP
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from .app import create_app

    pinned, shown_ref = check(options)
    loaded = probe(ServeOptions(**{**options.__dict__, "ref": pinned}))  # one line here, before any worker
    sock = _bind(options.host, options.port)
    port = sock.getsockname()[1]
    url = url_of(options.host, port)
    metrics_dir = tempfile.mkdtemp(prefix="modelpack-metrics-")
    worker_opts = ServeOptions(**{**options.__dict__, "ref": pinned, "port": port})
    os.environ.update(worker_opts.to_env())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Idle OpenMP threads that spin between requests burn the cores the other workers need.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    common: dict[str, Any] = {
        "workers": options.workers, "log_level": "warning", "access_log": False,
        "timeout_graceful_shutdown": 5, "server_header": False, "lifespan": "on",
    }
    if options.workers > 1:
        # Each spawned worker loads its own copy; the probe's copy is not needed here.
        loaded = None
        config = uvicorn.Config("nbmodelpack.serving.app:create_app", factory=True, **common)
    else:
        config = uvicorn.Config(create_app(worker_opts, loaded=loaded), **common)
    entry = ServerEntry(pid=os.getpid(), url=url, ref=shown_ref, name=shown_ref.rsplit(":", 1)[0], workers=options.workers, started=time.time(), token=bool(options.token))
    reg = register(entry)
    print(f"serving {shown_ref} at {url} with {options.workers} worker(s); Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        if options.workers > 1:
            supervisor = Multiprocess(config, sockets=[sock])
            watch_parent(supervisor.should_exit.set)
            supervisor.run()
        else:
            server = uvicorn.Server(config)
            watch_parent(lambda: setattr(server, "should_exit", True))
            server.run(sockets=[sock])
            if not server.started:
                raise ServingError("the server did not start (see the log above)")
    except KeyboardInterrupt:
        pass
    finally:
        reg.unlink(missing_ok=True)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def watch_parent(stop_now: Any) -> None:
    """Call ``stop_now`` when the process that launched us (a notebook kernel) is gone."""
    raw = os.environ.get(PARENT_ENV)
    if not raw or not raw.isdigit():
        return
    parent = int(raw)

    def watch() -> None:
        while os.getppid() == parent and alive(parent):
            time.sleep(0.5)
        stop_now()

    threading.Thread(target=watch, daemon=True, name="modelpack-parent-watch").start()


# ---- background ----------------------------------------------------------------------------
def _cli_args(options: ServeOptions) -> list[str]:
    args = ["serve", options.ref, "--host", options.host, "--port", str(options.port), "--workers", str(options.workers)]
    args += ["--max-batch", str(options.max_batch), "--max-delay-ms", str(options.max_delay_ms), "--max-body", str(options.max_body)]
    if options.threads:
        args += ["--threads", str(options.threads)]
    if options.trust_code:
        args.append("--trust-code")
    if options.engine != "modelpack":
        args += ["--engine", options.engine, "--replicas", str(options.replicas), "--target-ongoing", str(options.target_ongoing)]
        args += [f"--{k.replace('_', '-')}={v}" for k, v in (("min_replicas", options.min_replicas), ("max_replicas", options.max_replicas), ("ray_address", options.ray_address)) if v is not None]
    if options.verify:
        args.append("--verify")
    if options.int8_kernel:
        args += ["--int8-kernel", options.int8_kernel]
    if options.model_name:
        args += ["--model-name", options.model_name]
    return args


def start(options: ServeOptions, *, timeout: float = 120.0) -> ServerEntry:
    """Launch ``modelpack serve`` in the background; return its entry once it is ready.

    It stops when this process exits (atexit, and the server polls its parent).

    Example:
        >>> entry = start(ServeOptions(ref="mnist-mlp:latest", port=0))  # doctest: +SKIP
        >>> entry.url  # doctest: +SKIP
        'http://127.0.0.1:41234'
    """
    check(options)  # the child probes the rest (trust policy, key, rebuild) and exits with one line
    env = dict(os.environ)
    env[PARENT_ENV] = str(os.getpid())
    # Secrets travel in the environment, never on the command line (visible in ps).
    # (A passphrase the caller's environment already holds reaches the child as it is.)
    for key in (TOKEN_ENV, IDENTITY_ENV):
        env.pop(key, None)
    env.update({k: v for k, v in options.to_env().items() if k in (TOKEN_ENV, IDENTITY_ENV, PASSPHRASE_ENV)})
    log_path = folder() / "logs" / f"serve-{int(time.time() * 1000)}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "nbmodelpack", *_cli_args(options)], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    _started_here.append(proc.pid)
    deadline = time.monotonic() + timeout
    entry = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _started_here.remove(proc.pid)
            raise ServingError(f"the server exited: {_last_line(log_path)}")
        entry = next((s for s in servers() if s.pid == proc.pid), None)
        if entry is not None and _ready(entry.url):
            return entry
        time.sleep(0.1)
    with contextlib.suppress(ModelPackError):
        stop(str(proc.pid))
    raise ServingError(f"the server was not ready within {timeout:.0f} s", hint=f"see {log_path}")


def _ready(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:  # noqa: S310 - our own loopback URL
            return bool(r.status == 200)
    except OSError:
        return False


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln.removeprefix("error:").strip() for ln in lines if ln.startswith("error:")]  # ours adds the prefix
    return (errors or lines or ["no output"])[-1][:300]


@atexit.register
def _stop_started_here() -> None:
    for pid in _started_here:
        if alive(pid):
            with contextlib.suppress(ModelPackError):
                stop(str(pid), timeout=5)


def curl_line(entry: ServerEntry) -> str:
    """A ready-to-paste ``curl`` that sends one PNG to ``/predict`` (``$TOKEN`` stands for the token)."""
    auth = f" -H {shlex.quote('Authorization: Bearer $TOKEN')}" if entry.token else ""
    return f"curl -s{auth} -H 'Content-Type: image/png' --data-binary @digit.png {entry.url}/predict"


__all__ = ["PARENT_ENV", "ServeOptions", "ServerEntry", "check", "curl_line", "is_loopback", "probe", "serve", "servers", "start", "stop", "url_of"]
