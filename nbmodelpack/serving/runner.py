"""Run the server: checks, socket, worker processes, the registry of running servers.

``serve`` runs in the foreground (the terminal's ``modelpack serve``); ``start``
launches it as a background process (the notebook's ``%modelpack serve``) and
waits until it answers ``/v2/health/ready``. Each server writes
``$NBMODELPACK_HOME/servers/<pid>.json`` (pid, url, ref) so ``servers`` and
``stop`` find it from any process; entries of dead processes are pruned.

Worker processes are uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``:
spawned workers sharing one listening socket, dead workers replaced); each
worker builds the app with :func:`nbmodelpack.serving.app.create_app` and loads
the model itself.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths
from .._files import atomic_write
from ..errors import ModelPackError, ServingError, UsageError
from .app import IDENTITY_ENV, TOKEN_ENV, ServeOptions

PARENT_ENV = "NBMODELPACK_SERVE_PARENT"
_started_here: list[int] = []


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1`` and ``localhost`` are loopback; anything else is not.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
        (True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check(options: ServeOptions, *, probe: bool = True) -> tuple[str, str]:
    """Refuse unsafe or impossible options before anything starts; return ``(ref by digest, name)``.

    ``probe`` also applies the trust policy and tries the key on an encrypted
    bundle (a full decrypt): done once, by whoever starts the server; workers
    load through :func:`nbmodelpack.load`, which applies the policy again.
    """
    if not is_loopback(options.host) and not options.token:
        raise ServingError(
            f"refusing to listen on {options.host} without a token",
            hint="pass --token (or set NBMODELPACK_SERVE_TOKEN), or keep the default --host 127.0.0.1",
        )
    if options.workers < 1 or options.max_batch < 1 or options.max_delay_ms < 0 or options.max_body < 1024:
        raise UsageError("--workers and --max-batch must be ≥ 1, --max-delay-ms ≥ 0, --max-body ≥ 1024")
    if not 0 <= options.port <= 65535:
        raise UsageError(f"--port {options.port} is not a port number")
    from ..signing import enforce_trust_policy
    from ..store import get_store

    bundle = get_store().open(options.ref)
    if probe:
        enforce_trust_policy(bundle)  # refused here in one line, before any worker starts
    if not bundle.has("signature.json"):
        raise ServingError(f"{bundle.info.ref} has no signature.json", hint="pack it with example= so its inputs are known")
    sig = bundle.read_json("signature.json", identity=options.identity)
    if not sig.get("inputs") or not sig.get("outputs"):
        raise ServingError(f"{bundle.info.ref} does not say its inputs and outputs", hint="re-pack it with example=")
    if probe and bundle.info.encrypted:
        bundle.plaintext("model.safetensors", identity=options.identity)  # a wrong key fails here, not in every worker
    return f"{bundle.name}@{bundle.digest}", bundle.info.ref


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ServingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="pick another --port, or --port 0 for any free one") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    """``http://HOST:PORT`` (IPv6 hosts bracketed; 0.0.0.0 shown as 127.0.0.1 for local calls)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown and not shown.startswith("[") else f"http://{shown}:{port}"


# ---- registry ------------------------------------------------------------------------------
def _registry() -> Path:
    return paths.home() / "servers"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


@dataclass
class ServerEntry:
    """One running server as the registry lists it."""

    pid: int
    url: str
    ref: str
    name: str
    workers: int = 1
    started: float = 0.0
    token: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def servers() -> list[ServerEntry]:
    """Running servers (entries of dead processes are removed).

    Example:
        >>> [s.url for s in servers()]  # doctest: +SKIP
        ['http://127.0.0.1:8000']
    """
    out = []
    folder = _registry()
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(file.read_text())
            entry = ServerEntry(**{f.name: doc[f.name] for f in dataclasses.fields(ServerEntry)})
        except (OSError, ValueError, KeyError, TypeError):
            file.unlink(missing_ok=True)
            continue
        if _alive(entry.pid):
            out.append(entry)
        else:
            file.unlink(missing_ok=True)
    return out


def _register(entry: ServerEntry) -> Path:
    folder = _registry()
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"{entry.pid}.json"
    atomic_write(file, json.dumps(entry.to_json()).encode(), fsync=False)
    return file


def stop(which: str = "all", *, timeout: float = 10.0) -> list[ServerEntry]:
    """Stop servers: ``"all"``, a pid, a URL, or a bundle ref/name; return those stopped.

    Example:
        >>> [s.ref for s in stop("mnist-mlp")]  # doctest: +SKIP
        ['mnist-mlp:3']
    """
    running = servers()
    chosen = [s for s in running if which in ("all", str(s.pid), s.url, s.ref, s.name, f"{s.name}:latest")]
    if not chosen:
        shown = ", ".join(f"{s.ref} ({s.url})" for s in running) or "none"
        raise UsageError(f"no running server matches {which!r}", hint=f"running: {shown}")
    for s in chosen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(s.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for s in chosen:
        while _alive(s.pid) and time.monotonic() < deadline:
            _reap(s.pid)
            time.sleep(0.05)
        if _alive(s.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.pid, signal.SIGKILL)
        _reap(s.pid)
        (_registry() / f"{s.pid}.json").unlink(missing_ok=True)
    return chosen


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# ---- foreground ----------------------------------------------------------------------------
def serve(options: ServeOptions) -> None:
    """Serve ``options.ref`` in this process until Ctrl-C / SIGTERM (or the launching parent exits).

    Example:
        >>> serve(ServeOptions(ref="mnist-mlp:latest", port=8000))  # doctest: +SKIP
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    pinned, shown_ref = check(options, probe=PARENT_ENV not in os.environ)  # start() probed already
    sock = _bind(options.host, options.port)
    port = sock.getsockname()[1]
    url = url_of(options.host, port)
    metrics_dir = tempfile.mkdtemp(prefix="modelpack-metrics-")
    worker_opts = ServeOptions(**{**options.__dict__, "ref": pinned, "port": port})
    os.environ.update(worker_opts.to_env())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Idle OpenMP threads that spin between requests burn the cores the other workers need.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    config = uvicorn.Config(
        "nbmodelpack.serving.app:create_app", factory=True, workers=options.workers, log_level="warning",
        access_log=False, timeout_graceful_shutdown=5, server_header=False, lifespan="on",
    )
    entry = ServerEntry(pid=os.getpid(), url=url, ref=shown_ref, name=shown_ref.rsplit(":", 1)[0], workers=options.workers, started=time.time(), token=bool(options.token))
    reg = _register(entry)
    print(f"serving {shown_ref} at {url} with {options.workers} worker(s); Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        if options.workers > 1:
            supervisor = Multiprocess(config, sockets=[sock])
            _watch_parent(supervisor.should_exit.set)
            supervisor.run()
        else:
            server = uvicorn.Server(config)
            _watch_parent(lambda: setattr(server, "should_exit", True))
            server.run(sockets=[sock])
            if not server.started:
                raise ServingError("the server did not start (see the log above)")
    except KeyboardInterrupt:
        pass
    finally:
        reg.unlink(missing_ok=True)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _watch_parent(stop_now: Any) -> None:
    """Stop when the process that launched us (a notebook kernel) is gone."""
    raw = os.environ.get(PARENT_ENV)
    if not raw or not raw.isdigit():
        return
    parent = int(raw)

    def watch() -> None:
        while os.getppid() == parent and _alive(parent):
            time.sleep(0.5)
        stop_now()

    threading.Thread(target=watch, daemon=True, name="modelpack-parent-watch").start()


# ---- background ----------------------------------------------------------------------------
def _cli_args(options: ServeOptions) -> list[str]:
    args = ["serve", options.ref, "--host", options.host, "--port", str(options.port), "--workers", str(options.workers)]
    args += ["--max-batch", str(options.max_batch), "--max-delay-ms", str(options.max_delay_ms), "--max-body", str(options.max_body)]
    if options.threads:
        args += ["--threads", str(options.threads)]
    return args


def start(options: ServeOptions, *, timeout: float = 120.0) -> ServerEntry:
    """Launch ``modelpack serve`` in the background; return its entry once it is ready.

    It stops when this process exits (atexit, and the server polls its parent).

    Example:
        >>> entry = start(ServeOptions(ref="mnist-mlp:latest", port=0))  # doctest: +SKIP
        >>> entry.url  # doctest: +SKIP
        'http://127.0.0.1:41234'
    """
    check(options)
    env = dict(os.environ)
    env[PARENT_ENV] = str(os.getpid())
    # Secrets travel in the environment, never on the command line (visible in ps).
    for key in (TOKEN_ENV, IDENTITY_ENV):
        env.pop(key, None)
    env.update({k: v for k, v in options.to_env().items() if k in (TOKEN_ENV, IDENTITY_ENV)})
    log_path = _registry() / "logs" / f"serve-{int(time.time() * 1000)}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "nbmodelpack", *_cli_args(options)], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    _started_here.append(proc.pid)
    deadline = time.monotonic() + timeout
    entry = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
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
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:300]


@atexit.register
def _stop_started_here() -> None:
    for pid in _started_here:
        if _alive(pid):
            with contextlib.suppress(ModelPackError):
                stop(str(pid), timeout=5)


def curl_line(entry: ServerEntry) -> str:
    """A ready-to-paste ``curl`` that sends one PNG to ``/predict`` (``$TOKEN`` stands for the token)."""
    auth = f" -H {shlex.quote('Authorization: Bearer $TOKEN')}" if entry.token else ""
    return f"curl -s{auth} -H 'Content-Type: image/png' --data-binary @digit.png {entry.url}/predict"
