"""The registry of running model servers: one JSON file per server process.

Each server writes ``$NBMODELPACK_HOME/servers/<pid>.json`` (pid, url, ref) so
``servers`` and ``stop`` find it from any process; entries of dead processes are
pruned when read. Standard library only: the sidebar's listing reads it for its
"serving" badges on a machine without the ``serve`` extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths
from .._files import atomic_write
from ..errors import UsageError


def folder() -> Path:
    """Where the entries live (``$NBMODELPACK_HOME/servers``)."""
    return paths.home() / "servers"


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie child of ours counts as dead).

    Example:
        >>> alive(os.getpid())
        True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def reap(pid: int) -> None:
    """Collect the exit status of a child of ours, if it is one that exited."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


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
    where = folder()
    for file in sorted(where.glob("*.json")) if where.is_dir() else []:
        try:
            doc = json.loads(file.read_text())
            entry = ServerEntry(**{f.name: doc[f.name] for f in dataclasses.fields(ServerEntry)})
        except (OSError, ValueError, KeyError, TypeError):
            file.unlink(missing_ok=True)
            continue
        if alive(entry.pid):
            out.append(entry)
        else:
            file.unlink(missing_ok=True)
    return out


def register(entry: ServerEntry) -> Path:
    """Write the entry of a server that is about to listen; return its file (removed at exit)."""
    where = folder()
    where.mkdir(parents=True, exist_ok=True)
    file = where / f"{entry.pid}.json"
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
        while alive(s.pid) and time.monotonic() < deadline:
            reap(s.pid)
            time.sleep(0.05)
        if alive(s.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.pid, signal.SIGKILL)
        reap(s.pid)
        (folder() / f"{s.pid}.json").unlink(missing_ok=True)
    return chosen


__all__ = ["ServerEntry", "alive", "folder", "reap", "register", "servers", "stop"]
