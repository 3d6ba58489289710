"""An HTTP client of the OCI distribution API (``/v2/…``) on :mod:`requests`: requests, auth, bounded answers.

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
- every answer is read under a cap (:mod:`.transport`): bodies are streamed,
  never read whole, ``Content-Encoding`` is refused (we ask for ``identity``)
  so a small answer cannot inflate, and redirects are followed here (at most
  five) because :mod:`requests` reads a redirect's whole body before following it.

The registry operations publish, pull and list need are in :mod:`.registry_transport`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from ..bundle.format import plain
from ..errors import AuthError, RemoteError, RemoteUnavailable
from ..version import __version__
from .credentials import Credentials
from .transport import ERROR_CAP, TOKEN_CAP, loads_answer, read_capped

USER_AGENT = f"nbmodelpack/{__version__}"
_TIMEOUT = (10, 300)  # connect, read
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.strip().lower(), dict(_CHALLENGE_RE.findall(rest[:8192]))


def read_body(resp: requests.Response, cap: int, what: str, where: str) -> bytes:
    """A response's body, at most ``cap`` bytes (a declared longer one is refused unread); closes it.

    Example:
        >>> read_body(response, 4 << 20, "a manifest", "127.0.0.1:5000")  # doctest: +SKIP
        b'{...}'
    """
    try:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise RemoteError(f"{what} from {where} is larger than {cap >> 10} KiB ({int(declared) >> 10} KiB)", hint="the remote is not a well-behaved registry; nothing was written")
        check_encoding(resp, where)
        return read_capped(raw_reader(resp, where), cap, what=what, where=where)
    finally:
        resp.close()


def check_encoding(resp: requests.Response, where: str) -> None:
    """Refuse an encoded body: we asked for ``identity``, and inflating it would bypass every cap."""
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RemoteError(f"{where} sent a {encoding}-encoded answer though asked for none", hint="is a proxy between us and the registry?")


def raw_reader(resp: requests.Response, where: str) -> Any:
    """``read(n)`` on the undecoded body that turns a broken connection into :class:`RemoteUnavailable`."""

    def read(n: int) -> bytes:
        try:
            return bytes(resp.raw.read(n, decode_content=False) or b"")
        except RemoteError:
            raise
        except Exception as exc:  # urllib3 and socket errors alike: the connection broke or timed out
            raise RemoteUnavailable(f"lost the connection to {where}", hint="try again") from exc

    return read


class RegistryClient:
    """One registry host: authenticated, bounded requests. Thread-safe enough for parallel blob transfers.

    Example:
        >>> client = RegistryClient("127.0.0.1:5000", insecure=True)  # doctest: +SKIP
        >>> client.ping()  # doctest: +SKIP
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
        self.session.headers["Accept-Encoding"] = "identity"
        self._lock = threading.Lock()
        self._basic = False
        self._tokens: dict[str, str] = {}
        self._challenge: dict[str, str] | None = None

    # ---- auth -------------------------------------------------------------------------------
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
        if auth is not None and self.base.startswith("https:") and not str(params["realm"]).startswith("https://"):
            # A registry we reach over TLS may not send our password to a plain-HTTP token service.
            raise AuthError(f"{self.host} asks for credentials at a plain-HTTP token service", hint="refused: the password would cross the network unencrypted")
        try:
            got = self.session.get(params["realm"], params=query, auth=auth, timeout=_TIMEOUT, stream=True, allow_redirects=False)
        except requests.RequestException as exc:
            raise RemoteUnavailable(f"cannot reach the token service of {self.host}: {exc.__class__.__name__}", hint="is the registry's auth service running?") from exc
        if got.status_code in (401, 403):
            got.close()
            if auth is None:  # we asked for an anonymous token
                raise AuthError(f"{self.host} needs a login", hint=self._login_hint())
            raise AuthError(f"wrong username or password for {self.host}", hint=self._login_hint())
        if got.status_code != 200:
            got.close()
            raise AuthError(f"the token service of {self.host} answered HTTP {got.status_code}", hint=self._login_hint())
        body = loads_answer(read_body(got, TOKEN_CAP, "a token answer", self.host), what="a token answer", where=self.host)
        token = body.get("token") or body.get("access_token")
        if not token or not isinstance(token, str):
            raise AuthError(f"the token service of {self.host} sent no token", hint=self._login_hint())
        with self._lock:
            self._challenge = params
            self._tokens[scope] = token

    # ---- requests ---------------------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        *,
        scope: str = "",
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        data: bytes | Iterable[bytes] | None = None,
        allow: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send one request (body unread), answering an auth challenge once and following redirects.

        ``ok`` statuses are returned, as are ``allow`` ones (e.g. 404 for a HEAD);
        anything else is a one-line :class:`RemoteError` (or :class:`AuthError`).
        The caller reads the body under a cap and closes the response.
        """
        full = url if url.startswith(("http://", "https://")) else self.base + url
        for attempt in range(2):
            resp = self._send(method, full, scope, headers, data)
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

    def _send(self, method: str, url: str, scope: str, headers: dict[str, str] | None, data: bytes | Iterable[bytes] | None) -> requests.Response:
        """One exchange, following at most five redirects; credentials go only to the registry's own origin."""
        origin = urlsplit(self.base)[:2]
        for _ in range(_MAX_REDIRECTS + 1):
            same = urlsplit(url)[:2] == origin
            hdrs = {**(self._auth_header(scope) if same else {}), **(headers or {})}
            try:
                resp = self.session.request(method, url, headers=hdrs, data=data, stream=True, timeout=_TIMEOUT, allow_redirects=False)
            except requests.exceptions.SSLError as exc:
                raise RemoteUnavailable(f"TLS handshake with {self.host} failed", hint="for a plain-HTTP registry add the remote with insecure=True") from exc
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise RemoteUnavailable(f"cannot reach {self.host}", hint="is the registry running and the URL right? see `modelpack remote ls`") from exc
            except requests.RequestException as exc:
                raise RemoteError(f"{method} {url.split('?')[0]} on {self.host} failed: {type(exc).__name__}", hint="check the remote URL with `modelpack remote ls`") from exc
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECTS or not location or method not in ("GET", "HEAD"):
                return resp
            resp.close()  # unread: a redirect's body is not ours to buffer
            url = urljoin(url, location)
            if not url.startswith(("http://", "https://")):
                raise RemoteError(f"{self.host} redirected to {url.split('?')[0]!r}", hint="the remote is not a well-behaved registry")
        raise RemoteError(f"{self.host} redirected {method} {url.split('?')[0]} more than {_MAX_REDIRECTS} times", hint="the remote is not a well-behaved registry")

    def _error(self, resp: requests.Response, method: str, url: str) -> RemoteError:
        status = resp.status_code
        try:
            body = read_body(resp, ERROR_CAP, "an error answer", self.host)
        except RemoteError:
            body = b""
        detail = ""
        try:
            errors = loads_answer(body, what="an error answer", where=self.host).get("errors") or []
            if isinstance(errors, list):
                detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors[:3] if isinstance(e, dict))
        except RemoteError:
            detail = body[:120].decode("utf-8", "replace")
        detail = plain(" ".join(detail.split()), 200)  # one line without terminal escapes, however the registry wrote it
        if status >= 500:
            hint = "the registry is failing; try again later"
        elif status == 404:
            hint = "is the URL an OCI registry? check it with `modelpack remote ls`"
        else:
            hint = "the registry refused the request"
        return RemoteError(f"{self.host} answered HTTP {status} to {method} {url.split('?')[0]}" + (f": {detail}" if detail else ""), hint=hint)

    def ping(self) -> None:
        """``GET /v2/``: checks that the registry answers and that our login is accepted."""
        self.request("GET", "/v2/", scope="").close()

    def next_link(self, resp: requests.Response) -> str:
        """The ``Link: <…>; rel="next"`` page, made absolute ("" when none)."""
        link = resp.links.get("next", {}).get("url", "")
        return urljoin(self.base + "/", link) if link else ""
