"""Start a server process, wait until it answers, always stop it: the one way tests and benchmarks do it.

``free_port()`` picks a port; ``running(...)`` is the context manager around the process.
Benchmarks import this module too (``bench/`` puts ``tests/e2e`` on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

Probe = Callable[[subprocess.Popen[bytes]], bool]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str, *, headers: Mapping[str, str] | None = None, data: bytes | None = None, statuses: tuple[int, ...] = (200,)) -> Probe:
    """A readiness probe: ``url`` answers one of ``statuses`` (a POST when ``data`` is given)."""

    def probe(_: subprocess.Popen[bytes]) -> bool:
        request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status in statuses
        except urllib.error.HTTPError as exc:
            return exc.code in statuses

    return probe


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process's whole group (workers, kernels), SIGKILL it after ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Children that outlived their parent's clean exit go too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    cmd: Sequence[str],
    *,
    ready: str | Probe,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 90,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group until it is ready; stop the group on exit.

    ``ready`` is a URL that must answer 200 (sent with ``headers``) or a probe called with
    the process until it returns True (``OSError`` counts as "not yet"). Output goes to
    ``log`` (appended), whose tail is in the error if the process exits or is not ready
    within ``timeout`` seconds.

    Example:
        >>> import sys
        >>> port = free_port()
        >>> cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        >>> with running(cmd, ready=f"http://127.0.0.1:{port}/") as proc:
        ...     proc.poll() is None
        True
        >>> proc.poll() is not None
        True
    """
    probe = answers(ready, headers=headers) if isinstance(ready, str) else ready
    with open(log, "ab") if log is not None else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(list(cmd), env=None if env is None else dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                with contextlib.suppress(OSError):
                    if probe(proc):
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready after {timeout:.0f} s"
                    tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
                    raise RuntimeError(f"{' '.join(cmd[:3])} {why}\n{tail}")
                time.sleep(0.1)
            yield proc
        finally:
            stop(proc)
