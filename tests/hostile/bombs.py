"""Bombs: measure a door's peak memory in a fresh process, and a registry that streams without end.

``peak_of`` runs one operation in a subprocess after its imports are warm,
resets the kernel's high-water mark (``/proc/self/clear_refs``) and reports
``VmHWM`` minus the resident size before: what the operation itself added at
its peak. ``HostileRegistry`` is a tiny HTTP server on 127.0.0.1 (stdlib
``http.server``) that speaks just enough of the distribution API to answer a
manifest whose layer descriptors say 1 KB with a 1 GiB body (generated, never
stored), or a manifest endpoint that streams 200 MiB; it counts what it sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from conftest import subprocess_env

from .craft import GIB, MIB, Base, assemble, digest_of

_MEASURE = """
import json, resource, sys
import nbmodelpack, nbmodelpack.api, nbmodelpack.remote, nbmodelpack.pytorch.restore, torch  # warm imports
from nbmodelpack.errors import ModelPackError

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

try:  # reset the high-water mark (Linux >= 4.0) so import-time peaks do not hide the operation's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, peak = status("VmRSS"), lambda: status("VmHWM")
except OSError:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ok, err, crash = True, "", ""
try:
    {call}
except ModelPackError as exc:
    ok, err = False, str(exc)
except BaseException as exc:
    ok, err, crash = False, str(exc)[:300], type(exc).__name__
print(json.dumps({{"ok": ok, "error": err, "crash": crash, "added_mb": (peak() - before) / 1024}}))
"""


def peak_of(call: str, *, timeout: float = 600) -> dict[str, Any]:
    """Run ``call`` (one Python statement) in a fresh process; return ok/error/crash and the MB it added at peak."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE.format(call=call)], env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": proc.stderr[-500:], "crash": f"exit {proc.returncode}", "added_mb": float("nan")}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@dataclass
class HostileRegistry:
    """A registry that lies: small descriptors, endless bodies. ``sent`` counts body bytes per path."""

    manifest: bytes
    config: tuple[str, bytes]
    blob_body: int = GIB
    manifest_body: int = 200 * MIB
    sent: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _stream(self, size: int, head: bytes = b"") -> None:
                # Close-delimited (HTTP/1.0, no Content-Length): the client must count for itself.
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                chunk = bytes(MIB)
                sent = 0
                try:
                    if head:
                        self.wfile.write(head)
                        sent += len(head)
                    while sent < size:
                        self.wfile.write(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                registry.sent[self.path] = registry.sent.get(self.path, 0) + sent

            def _answer(self, body: bytes, media: str, digest: str | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server API
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path in ("/v2", "/v2/"):
                    return self._answer(b"{}", "application/json")
                if "/manifests/huge" in path:
                    return self._stream(registry.manifest_body, b'{"schemaVersion": 2, "annotations": {"pad": "')
                if "/manifests/" in path:
                    return self._answer(registry.manifest, "application/vnd.oci.image.manifest.v1+json", digest_of(registry.manifest))
                if path.endswith(registry.config[0]):
                    return self._answer(registry.config[1], "application/octet-stream")
                if "/blobs/" in path:
                    return self._stream(registry.blob_body)
                self.send_response(404)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HostileRegistry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def lying_manifest(linear: Base) -> tuple[bytes, tuple[str, bytes]]:
    """A genuine-looking manifest whose weight descriptor says 1 KB (the registry will send 1 GiB)."""
    raw, blobs = assemble(linear)
    doc = json.loads(raw)
    for layer in doc["layers"]:
        if layer["annotations"]["org.cncf.model.filepath"] == "model.safetensors":
            layer["size"] = 1024
            layer["digest"] = digest_of(b"not what will be sent")
    config = doc["config"]["digest"]
    return json.dumps(doc, indent=2).encode(), (config, blobs[config])
