"""Start a server process for a test, wait until it answers, always stop it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    ready_url: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 90,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (output to ``log``) until ``ready_url`` answers 200; terminate it on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(urllib.request.Request(ready_url, headers=dict(headers or {})), timeout=5) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{cmd[2] if len(cmd) > 2 else cmd[0]} did not start:\n" + log.read_text(errors="replace")[-3000:])
                time.sleep(0.3)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
