"""Start a real OCI registry (Debian's ``docker-registry``) on 127.0.0.1 for tests and benchmarks.

Its own config: a free port chosen at run time, filesystem storage in a
temporary directory, a bcrypt htpasswd file made by ``htpasswd -Bbn``, an
``http.secret`` and deletes enabled. Every request is logged to ``log_path``
so tests can count what was sent.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from processes import answers, free_port, running

USER = "tester"
PASSWORD = "s3cret-pw"


@dataclass
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``; ``storage`` its data directory."""

    host: str
    storage: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    user: str = USER
    password: str = PASSWORD

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log_mark(self) -> int:
        """The current end of the request log (pass to :meth:`requests_since`)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def requests_since(self, mark: int, agent: str = "nbmodelpack/") -> list[tuple[str, str]]:
        """``(method, uri)`` of the requests by user agent ``agent`` completed since ``mark`` (from the access log)."""
        return [(m, u) for m, u, _ in self.answers_since(mark, agent)]

    def answers_since(self, mark: int, agent: str = "nbmodelpack/") -> list[tuple[str, str, int]]:
        """``(method, uri, status)`` of the requests by ``agent`` completed since ``mark``."""
        time.sleep(0.2)  # the registry flushes its log line just after answering
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        out = []
        for line in text.splitlines():
            # the access log is Apache combined format: "METHOD URI HTTP/1.1" STATUS ...
            if agent not in line:
                continue
            m = re.search(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d+)', line)
            if m:
                out.append((m.group(1), m.group(2), int(m.group(3))))
        return out

    def blob_data(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def _config(port: int, storage: Path, htpasswd: Path) -> str:
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secrets.token_hex(16)}
auth:
  htpasswd:
    realm: nbmodelpack-test
    path: {htpasswd}
"""


def _token_auth(workdir: Path) -> tuple[str, Iterator[None]]:
    """A token service for ``auth.token`` mode: checks basic credentials, issues ES256 JWTs.

    The signing certificate is self-signed and is the registry's ``rootcertbundle``;
    each token carries it in ``x5c`` as the distribution token spec allows.
    """
    import base64
    import datetime
    import threading
    import uuid
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    import jwt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nbmodelpack test token issuer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    bundle = workdir / "token-ca.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            query = parse_qs(urlparse(self.path).query)
            access = []
            for scope in " ".join(query.get("scope", [])).split():
                kind, _, rest = scope.partition(":")
                repo, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": repo, "actions": actions.split(",")})
            t = int(time.time())
            claims = {"iss": "nbmodelpack-test-issuer", "sub": USER, "aud": query.get("service", [""])[0],
                      "exp": t + 300, "nbf": t - 10, "iat": t, "jti": uuid.uuid4().hex, "access": access}
            body = json.dumps({"token": jwt.encode(claims, key, algorithm="ES256", headers={"x5c": [x5c]})}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = f"""auth:
  token:
    realm: http://127.0.0.1:{server.server_address[1]}/token
    service: nbmodelpack-test
    issuer: nbmodelpack-test-issuer
    rootcertbundle: {bundle}
"""

    def stop() -> Iterator[None]:
        yield
        server.shutdown()
        server.server_close()

    return config, stop()


@contextlib.contextmanager
def running_registry(workdir: Path, *, auth: bool | str = True) -> Iterator[Registry]:
    """Start ``docker-registry`` in ``workdir``; yield a :class:`Registry`; stop it on exit.

    ``auth``: True (htpasswd, HTTP Basic), ``"token"`` (Bearer tokens from a token service), False (none).
    """
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    htpasswd = workdir / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True).stdout
    htpasswd.write_text(line.strip() + "\n")
    port = free_port()
    config = workdir / "config.yml"
    text = _config(port, storage, htpasswd)
    token_service = None
    if not auth:
        text = text.split("auth:")[0]
    elif auth == "token":
        token_config, token_service = _token_auth(workdir)
        text = text.split("auth:")[0] + token_config
        next(token_service)
    config.write_text(text)
    log_path = workdir / "registry.log"
    try:
        ready = answers(f"http://127.0.0.1:{port}/v2/", statuses=(200, 401))
        with running([binary, "serve", str(config)], ready=ready, log=log_path, timeout=30) as proc:
            yield Registry(host=f"127.0.0.1:{port}", storage=storage, log_path=log_path, proc=proc)
    finally:
        if token_service is not None:
            next(token_service, None)
