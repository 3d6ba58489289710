"""The one way tests start servers: ready when it answers, an early exit shows the log, the whole group stops."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from processes import free_port, running


def test_a_process_that_exits_before_it_is_ready_fails_with_its_log(tmp_path: Path):
    log = tmp_path / "out.log"
    with pytest.raises(RuntimeError, match=r"exited with 3\n.*no config here"), running([sys.executable, "-c", "print('no config here'); raise SystemExit(3)"], ready=lambda _: False, log=log):
        pass


def test_a_process_never_ready_is_stopped_after_the_timeout(tmp_path: Path):
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="not ready after 1 s"), running([sys.executable, "-c", code], ready=lambda _: False, timeout=1):
        pass
    assert time.monotonic() - start < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_leaving_the_block_stops_the_children_too(tmp_path: Path):
    child_pid = tmp_path / "child"
    port = free_port()
    # A server with a worker process that a plain terminate() of the server would leave running.
    code = (
        "import subprocess, sys, http.server\n"
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(child_pid)!r}, 'w').write(str(w.pid))\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()\n"
    )
    with running([sys.executable, "-c", code], ready=f"http://127.0.0.1:{port}/", cwd=tmp_path) as proc:
        assert proc.poll() is None
    assert proc.poll() is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(int(child_pid.read_text()), 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the worker outlived the server")
