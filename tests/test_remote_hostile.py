"""A hostile registry (a real HTTP server on 127.0.0.1) cannot make a pull read or hold more than the descriptors say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import subprocess_env

from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.bundle.manifest import layer
from nbmodelpack.errors import RemoteError
from nbmodelpack.remote.registry import RegistryClient
from nbmodelpack.remote.registry_transport import RegistryTransport
from nbmodelpack.remote.sync import pull_from
from nbmodelpack.store import Store

ENDLESS = 1 << 30  # what the hostile server streams for a blob (it stops when the client hangs up)
HUGE_MANIFEST = 200 << 20
PIECE = 64 << 10

# Runs the CLI's pull in a fresh process that counts every byte it reads from a socket
# and reports its peak memory above what it used before the pull.
PULL = """
import json, resource, socket, sys
read = [0]
_readinto = socket.SocketIO.readinto
def counting(self, b):
    n = _readinto(self, b)
    read[0] += n or 0
    return n
socket.SocketIO.readinto = counting
import nbmodelpack.api, nbmodelpack.remote
from nbmodelpack.cli import main
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rc = main(["pull", sys.argv[1]])
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"rc": rc, "read": read[0], "grew_mb": grew / 1024}))
"""


class Hostile(BaseHTTPRequestHandler):
    """``ns/evil``: an honest 1 KB-weights manifest whose blobs never end; ``ns/huge``: a 200 MiB manifest."""

    manifest = b""
    sent: dict[str, int] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _stream(self, total: int, byte: bytes) -> None:
        piece = byte * PIECE
        sent = 0
        try:
            while sent < total:  # bounded: the server stops too
                self.wfile.write(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.sent[self.path] = sent

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        elif self.path == "/v2/ns/evil/manifests/1":
            self.send_response(200)
            self.send_header("Content-Type", mt.MANIFEST)
            self.send_header("Content-Length", str(len(self.manifest)))
            self.end_headers()
            self.wfile.write(self.manifest)
        elif self.path.startswith("/v2/ns/evil/blobs/"):
            self.send_response(200)  # no Content-Length: the body runs until the connection closes
            self.end_headers()
            self._stream(ENDLESS, b"\0")
        elif self.path == "/v2/ns/huge/manifests/1":
            self.send_response(200)
            self.send_header("Content-Type", mt.MANIFEST)
            self.end_headers()
            self.wfile.write(b'{"schemaVersion": 2, "x": "')
            self._stream(HUGE_MANIFEST, b"x")
        elif self.path == "/v2/ns/broken/manifests/1":
            self.send_response(500)  # a 10 MiB error page, several lines long
            self.send_header("Content-Length", str(10 << 20))
            self.end_headers()
            self._stream(10 << 20, b"<html>\n")
        elif self.path == "/v2/ns/html/manifests/1":
            body = b"<html><body>Welcome to our proxy</body></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/v2/ns/loop/tags/list"):
            body = json.dumps({"tags": ["1"]}).encode()
            self.send_response(200)
            self.send_header("Link", '</v2/ns/loop/tags/list?n=1000&last=1>; rel="next"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/v2/ns/redirect/"):
            self.send_response(302)  # to itself, with a body requests would read whole
            self.send_header("Location", self.path)
            self.end_headers()
            self._stream(1 << 20, b"r")
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The server's ``HOST:PORT`` and the sum of the evil bundle's descriptor sizes."""
    store = Store(tmp_path / "source")
    weights = store.put_layer("model.safetensors", mt.WEIGHT, os.urandom(1024))
    bundle = store.open(store.commit(Draft(name="evil", layers=[weights], recipe={"op": "pack"})).ref)
    Hostile.manifest = bundle.manifest.raw
    Hostile.sent = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", sum(d.size for d in (bundle.manifest.config, *bundle.manifest.layers))
    finally:
        server.shutdown()
        server.server_close()


def pull(ref: str) -> tuple[dict[str, float], list[str]]:
    proc = subprocess.run([sys.executable, "-c", PULL, ref], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr.strip().splitlines()


def test_a_registry_streaming_endless_blobs_for_1_kb_descriptors_ends_in_one_line_within_the_descriptor_sizes(hostile: tuple[str, int], home: Path) -> None:
    host, described = hostile
    stats, stderr = pull(f"{host}/ns/evil:1")
    assert stats["rc"] == 1
    assert len(stderr) == 1 and stderr[0].startswith("error: integrity check failed: ") and "is longer than its descriptor's" in stderr[0], stderr
    # Every byte read: headers, the manifest, and each blob's descriptor size plus the one byte that tells "more".
    assert stats["read"] <= described + len(Hostile.manifest) + (64 << 10), stats
    assert stats["grew_mb"] < 100, stats
    assert not list((home / "store").rglob("pull-*")) and Store(home / "store").list() == []


def test_a_200_mib_manifest_is_refused_after_4_mib_in_one_line(hostile: tuple[str, int]) -> None:
    host, _ = hostile
    stats, stderr = pull(f"{host}/ns/huge:1")
    assert stats["rc"] == 1
    assert stderr == [f"error: remote: a manifest from {host}/ns/huge is larger than 4096 KiB (the remote is not a well-behaved registry; nothing was written)"]
    assert stats["read"] <= (4 << 20) + (64 << 10), stats
    assert stats["grew_mb"] < 100, stats


def one_line_error(call: object) -> str:
    with pytest.raises(RemoteError) as exc:
        call()  # type: ignore[operator]
    text = str(exc.value)
    assert "\n" not in text and exc.value.hint, text
    return text


def test_registry_failures_are_one_line_with_a_hint(hostile: tuple[str, int], tmp_path: Path) -> None:
    host, _ = hostile
    t = RegistryTransport(RegistryClient(host, insecure=True))
    assert one_line_error(lambda: t.get_manifest("ns/broken", "1")) == (
        f"remote: {host} answered HTTP 500 to GET /v2/ns/broken/manifests/1 (the registry is failing; try again later)"
    )
    assert "not a JSON object" in one_line_error(lambda: pull_from(t, Store(tmp_path / "s"), "ns/html", "1", name="html"))
    assert "is the URL an OCI registry?" in one_line_error(lambda: t.client.request("GET", "/v2/nothing/here"))
    assert "more than 5 times" in one_line_error(lambda: list(t.get_blob("ns/redirect", layer("x", mt.WEIGHT, "sha256:" + "0" * 64, 1), lambda n: None)))


def test_a_tag_list_whose_next_page_repeats_ends(hostile: tuple[str, int]) -> None:
    host, _ = hostile
    assert RegistryTransport(RegistryClient(host, insecure=True)).tags("ns/loop") == ["1", "1"]


def test_a_registry_error_text_reaches_the_terminal_without_its_escape_codes() -> None:
    import io

    import requests

    from nbmodelpack.remote.registry import RegistryClient

    class Raw(io.BytesIO):  # urllib3's read(n, decode_content=...) over fixed bytes
        def read(self, n: int | None = -1, decode_content: bool = False) -> bytes:
            return super().read(n)

    resp = requests.Response()
    resp.status_code = 500
    resp.raw = Raw(b'{"errors": [{"code": "X", "message": "\\u001b[2J\\u001b]0;pwned\\u0007boom"}]}')
    text = str(RegistryClient("127.0.0.1:1", insecure=True)._error(resp, "GET", "http://127.0.0.1:1/v2/"))
    assert "boom" in text and not any(ch in text for ch in "\x1b\x07")


def test_a_password_is_never_sent_to_a_plain_http_token_service_of_a_tls_registry() -> None:
    import requests

    from nbmodelpack.errors import AuthError
    from nbmodelpack.remote.credentials import Credentials
    from nbmodelpack.remote.registry import RegistryClient

    client = RegistryClient("registry.example:443", credentials=Credentials("alice", "secret"))
    challenge = requests.Response()
    challenge.status_code = 401
    challenge.headers["WWW-Authenticate"] = 'Bearer realm="http://registry.example/token",service="r"'
    with pytest.raises(AuthError, match="plain-HTTP token service"):
        client._answer_challenge(challenge, "repository:x:pull")
