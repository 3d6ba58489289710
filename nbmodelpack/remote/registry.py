"""A client of the OCI distribution API (``/v2/…``) on :mod:`requests`.

Why not ``oras`` (oras-py)? It re-serializes manifests (``json=manifest``), so
the pushed digest would differ from the local one; its monolithic upload reads
a whole blob into memory; it neither verifies pulled digests nor resumes an
interrupted upload, and it retries connection errors with back-off, which turns
"registry down" into a long hang. What it would give us (the 401 → Basic/Bearer
dance, reading ``~/.docker/config.json``) is small, so this module speaks the
protocol directly:

- auth as the distribution spec does: answer ``WWW-Authenticate: Basic`` with
  basic credentials and ``Bearer realm=…,service=…,scope=…`` by fetching a
  token from the realm (with basic credentials when we have them);
- blobs: ``HEAD`` (skip what exists), cross-repository ``mount``, monolithic
  ``POST``+``PUT`` for small blobs, ``PATCH`` chunks with ``Content-Range`` for
  large ones, with the upload URL and offset saved after every chunk so that a
  killed push resumes (``GET`` on the upload URL tells the registry's offset);
- manifests are sent as the exact local bytes and their digest is checked
  against ``Docker-Content-Digest``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import requests

from .. import paths
from .._files import atomic_write
from ..bundle import mediatypes as mt
from ..errors import AuthError, BundleNotFound, IntegrityError, RemoteError, RemoteUnavailable
from ..version import __version__
from .credentials import Credentials

USER_AGENT = f"nbmodelpack/{__version__}"
DEFAULT_CHUNK = 32 << 20
_TIMEOUT = (10, 300)  # connect, read
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


def chunk_size() -> int:
    """Blobs larger than this go up in ``PATCH`` chunks of this size (``NBMODELPACK_CHUNK_SIZE``).

    Example:
        >>> chunk_size() >= 1
        True
    """
    text = os.environ.get("NBMODELPACK_CHUNK_SIZE", "")
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_CHUNK


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.strip().lower(), dict(_CHALLENGE_RE.findall(rest))



def _json(resp: requests.Response, host: str) -> dict[str, Any]:
    """A registry's JSON answer as a dict; a proxy's HTML page or garbage is a :class:`RemoteError`."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RemoteError(f"{host} sent an answer that is not JSON (HTTP {resp.status_code})", hint="is the URL a registry, not a web page or proxy?")
    return doc

class RegistryClient:
    """One registry host. Thread-safe enough for parallel blob transfers.

    Example:
        >>> client = RegistryClient("127.0.0.1:5000", insecure=True)  # doctest: +SKIP
        >>> client.tags("team/mnist-mlp")  # doctest: +SKIP
        ['1', 'latest']
    """

    def __init__(self, host: str, *, insecure: bool = False, credentials: Credentials | None = None, remote_name: str = "") -> None:
        self.host = host
        self.base = f"{'http' if insecure else 'https'}://{host}"
        self.credentials = credentials
        self.remote_name = remote_name or host
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self._lock = threading.Lock()
        self._basic = False
        self._tokens: dict[str, str] = {}
        self._challenge: dict[str, str] | None = None

    # ---- requests and auth ----------------------------------------------------------------
    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            if self._basic and self.credentials:
                return {"Authorization": requests.auth._basic_auth_str(self.credentials.username, self.credentials.password)}
            token = self._tokens.get(scope)
            if token is None and self.credentials and self.credentials.token and self._challenge is None:
                token = self.credentials.token
            return {"Authorization": f"Bearer {token}"} if token else {}

    def _login_hint(self) -> str:
        return f"run `modelpack login {self.remote_name}`"

    def _answer_challenge(self, response: requests.Response, scope: str) -> None:
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if not self.credentials or not self.credentials.username:
                raise AuthError(f"{self.host} needs a login", hint=self._login_hint())
            with self._lock:
                self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(f"{self.host} refused the request (HTTP {response.status_code})", hint=self._login_hint())
        if self.credentials and self.credentials.token and not self.credentials.username:
            raise AuthError(f"{self.host} refused the saved token", hint=self._login_hint())
        query = {"service": params.get("service", "")} if params.get("service") else {}
        wanted = params.get("scope") or scope
        if wanted:
            query["scope"] = wanted
        auth = (self.credentials.username, self.credentials.password) if self.credentials and self.credentials.username else None
        try:
            got = self.session.get(params["realm"], params=query, auth=auth, timeout=_TIMEOUT)
        except requests.RequestException as exc:
            raise RemoteUnavailable(f"cannot reach the token service of {self.host}: {exc.__class__.__name__}") from exc
        if got.status_code in (401, 403):
            if auth is None:  # we asked for an anonymous token
                raise AuthError(f"{self.host} needs a login", hint=self._login_hint())
            raise AuthError(f"wrong username or password for {self.host}", hint=self._login_hint())
        if got.status_code != 200:
            raise AuthError(f"the token service of {self.host} answered HTTP {got.status_code}", hint=self._login_hint())
        body = _json(got, self.host)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise AuthError(f"the token service of {self.host} sent no token")
        with self._lock:
            self._challenge = params
            self._tokens[scope] = str(token)

    def request(
        self,
        method: str,
        url: str,
        *,
        scope: str = "",
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        stream: bool = False,
        allow: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send one request, answering an auth challenge once; raise a :class:`RemoteError` on failure.

        ``ok`` statuses are returned, as are ``allow`` ones (e.g. 404 for a HEAD).
        """
        full = url if url.startswith("http") else self.base + url
        for attempt in range(2):
            hdrs = {**self._auth_header(scope), **(headers or {})}
            try:
                resp = self.session.request(method, full, headers=hdrs, data=data, stream=stream, timeout=_TIMEOUT, allow_redirects=True)
            except requests.exceptions.SSLError as exc:
                raise RemoteUnavailable(f"TLS handshake with {self.host} failed", hint="for a plain-HTTP registry add the remote with --insecure") from exc
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise RemoteUnavailable(f"cannot reach {self.host}", hint="is the registry running and the URL right? see `modelpack remote ls`") from exc
            except requests.RequestException as exc:
                raise RemoteError(f"{method} {full.split('?')[0]} on {self.host} failed: {type(exc).__name__}") from exc
            if resp.status_code == 401 and attempt == 0:
                resp.close()
                self._answer_challenge(resp, scope)
                continue
            if resp.status_code == 401:
                resp.close()
                raise AuthError(f"wrong username or password for {self.host}", hint=self._login_hint())
            if resp.status_code == 403:
                resp.close()
                raise AuthError(f"{self.host} denied {method} {url.split('?')[0]}", hint="your login lacks permission for this repository")
            if resp.status_code in ok or resp.status_code in allow:
                return resp
            raise self._error(resp, method, url)
        raise AssertionError("unreachable")

    def _error(self, resp: requests.Response, method: str, url: str) -> RemoteError:
        detail = ""
        try:
            errors = resp.json().get("errors") or []
            detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError):
            detail = resp.text[:120]
        resp.close()
        return RemoteError(f"{self.host} answered HTTP {resp.status_code} to {method} {url.split('?')[0]}" + (f" ({detail})" if detail else ""))

    def ping(self) -> None:
        """``GET /v2/``: checks that the registry answers and that our login is accepted."""
        self.request("GET", "/v2/", scope="")

    # ---- manifests -------------------------------------------------------------------------
    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        """Fetch a manifest; return ``(raw, digest)``, the raw bytes re-hashed against the digest."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=f"repository:{repo}:pull",
            headers={"Accept": f"{mt.MANIFEST}, {mt.INDEX}"},
            allow=(404,),
        )
        if resp.status_code == 404:
            raise BundleNotFound(f"{self.remote_name}/{repo}:{reference}", hint=f"`modelpack ls --remote {self.remote_name}` lists what is there")
        raw = resp.content
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        claimed = reference if reference.startswith("sha256:") else resp.headers.get("Docker-Content-Digest", "")
        if claimed and claimed != actual:
            raise IntegrityError(
                f"manifest of {repo}:{reference} from {self.host} has digest {actual[:19]}…, expected {claimed[:19]}…",
                hint="the registry's copy is damaged; nothing was written",
            )
        return raw, actual

    def put_manifest(self, repo: str, reference: str, raw: bytes, digest: str) -> None:
        """Upload the exact manifest bytes under a tag (or digest); check the registry's digest."""
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=f"repository:{repo}:pull,push",
            headers={"Content-Type": mt.MANIFEST},
            data=raw,
            ok=(200, 201),
        )
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise IntegrityError(f"{self.host} stored the manifest as {got[:19]}…, expected {digest[:19]}…")

    def tags(self, repo: str) -> list[str]:
        """Every tag of a repository (following ``Link`` pagination)."""
        out: list[str] = []
        url = f"/v2/{repo}/tags/list?n=1000"
        while url:
            resp = self.request("GET", url, scope=f"repository:{repo}:pull", allow=(404,))
            if resp.status_code == 404:
                return []
            out += _json(resp, self.host).get("tags") or []
            url = _next_link(resp, self.base)
        return out

    def catalog(self) -> list[str] | None:
        """Every repository, or None when the registry does not allow the catalog."""
        out: list[str] = []
        url = "/v2/_catalog?n=1000"
        while url:
            try:
                resp = self.request("GET", url, scope="registry:catalog:*", allow=(404, 405))
            except AuthError:
                return None
            if resp.status_code in (404, 405):
                return None
            out += _json(resp, self.host).get("repositories") or []
            url = _next_link(resp, self.base)
        return out

    # ---- blobs -----------------------------------------------------------------------------
    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull,push", allow=(404,))
        return resp.status_code == 200

    def mount(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount: True if the registry linked the blob without an upload."""
        query = urlencode({"mount": digest, "from": from_repo})
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?{query}", scope=f"repository:{repo}:pull,push", ok=(201, 202))
        if resp.status_code == 201:
            return True
        # 202: the registry opened a normal upload instead; drop it.
        location = resp.headers.get("Location")
        if location:
            self.request("DELETE", urljoin(self.base + "/", location), scope=f"repository:{repo}:pull,push", ok=(204,), allow=(404, 405))
        return False

    def stream_blob(self, repo: str, digest: str, *, on_bytes: Callable[[int], Any] | None = None, block: int = 8 << 20) -> Iterator[bytes]:
        """Yield a blob's bytes as they arrive (the caller re-hashes them)."""
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull", stream=True, allow=(404,))
        if resp.status_code == 404:
            raise IntegrityError(f"blob {digest[:19]}… of {repo} is missing on {self.host}")
        try:
            for piece in resp.iter_content(chunk_size=block):
                if on_bytes:
                    on_bytes(len(piece))
                yield piece
        except requests.RequestException as exc:
            raise RemoteUnavailable(f"lost the connection to {self.host} while pulling {digest[:19]}…", hint="pull again") from exc
        finally:
            resp.close()

    def upload_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        path: Path,
        *,
        on_bytes: Callable[[int], Any] | None = None,
        chunk: int | None = None,
    ) -> int:
        """Upload one blob from a local file; return how many bytes were sent.

        Blobs up to ``chunk`` bytes go in one ``PUT``. Larger ones go in ``PATCH``
        chunks; after each chunk the upload URL and offset are saved under
        ``$NBMODELPACK_HOME/uploads`` so that a later call resumes where the registry is.
        """
        chunk = chunk or chunk_size()
        scope = f"repository:{repo}:pull,push"
        if size <= chunk:
            location = self._start_upload(repo, scope)
            data = path.read_bytes()
            self._finish(location, digest, scope, data)
            if on_bytes:
                on_bytes(size)
            return size
        state = _UploadState(self.host, repo, digest)
        location, offset = self._resume(state, scope)
        if offset and on_bytes:
            on_bytes(offset)
        sent = 0
        with open(path, "rb") as f:
            f.seek(offset)
            while offset < size:
                data = f.read(min(chunk, size - offset))
                resp = self.request(
                    "PATCH",
                    location,
                    scope=scope,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(data) - 1}",
                        "Content-Length": str(len(data)),
                    },
                    data=data,
                    ok=(202,),
                )
                location = _absolute(resp, self.base, location)
                offset += len(data)
                sent += len(data)
                state.save(location, offset)
                if on_bytes:
                    on_bytes(len(data))
        self._finish(location, digest, scope, b"")
        state.clear()
        return sent

    def _start_upload(self, repo: str, scope: str) -> str:
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,))
        return _absolute(resp, self.base, None)

    def _resume(self, state: _UploadState, scope: str) -> tuple[str, int]:
        saved = state.load()
        if saved:
            resp = self.request("GET", saved, scope=scope, ok=(204,), allow=(400, 404, 416))
            if resp.status_code == 204:
                offset = _range_end(resp.headers.get("Range", "")) + 1
                return _absolute(resp, self.base, saved), offset
            state.clear()  # expired or cancelled by the registry: start again
        location = self._start_upload(state.repo, scope)
        state.save(location, 0)
        return location, 0

    def _finish(self, location: str, digest: str, scope: str, data: bytes) -> None:
        sep = "&" if "?" in location else "?"
        self.request(
            "PUT",
            f"{location}{sep}{urlencode({'digest': digest})}",
            scope=scope,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
            data=data,
            ok=(201, 204),
        )


def _absolute(resp: requests.Response, base: str, fallback: str | None) -> str:
    location = resp.headers.get("Location")
    if not location:
        if fallback is None:
            raise RemoteError(f"{base} sent no upload location")
        return fallback
    return urljoin(base + "/", location)


def _range_end(header: str) -> int:
    # "0-1023" -> 1023; distribution answers "0--1" (or nothing) for an empty upload.
    m = re.match(r"^(?:bytes=)?0-(\d+)$", header.strip())
    return int(m.group(1)) if m else -1


def _next_link(resp: requests.Response, base: str) -> str:
    link = resp.links.get("next", {}).get("url", "")
    return urljoin(base + "/", link) if link else ""


class _UploadState:
    """Where an interrupted chunked upload stands: ``uploads/<key>.json`` under ``$NBMODELPACK_HOME``."""

    def __init__(self, host: str, repo: str, digest: str) -> None:
        self.host, self.repo, self.digest = host, repo, digest
        key = hashlib.sha256(f"{host}/{repo}@{digest}".encode()).hexdigest()[:32]
        self.path = paths.home() / "uploads" / f"{key}.json"

    def load(self) -> str | None:
        try:
            doc = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return str(doc.get("location") or "") or None

    def save(self, location: str, offset: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Saved after every chunk: no fsync (a lost record only means the upload restarts).
        state = {"host": self.host, "repo": self.repo, "digest": self.digest, "location": location, "offset": offset}
        atomic_write(self.path, json.dumps(state).encode(), fsync=False)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
