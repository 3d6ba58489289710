"""Remotes named in ``$NBMODELPACK_HOME/config.toml``, and what a remote reference names.

::

    default_remote = "team"
    [remotes.team]
    url = "oci://127.0.0.1:5000/team"   # or "file:///srv/share/models"
    insecure = true                      # plain HTTP

Example:
    >>> Remote("team", "oci://127.0.0.1:5000/team").repository("mnist-mlp")
    'team/mnist-mlp'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..bundle.refs import NAME_RE, REPO_RE, Reference, parse
from ..config import edit_config, load_config, remotes_table
from ..errors import UsageError


@dataclass(frozen=True)
class Remote:
    """A named remote: ``oci://HOST[:PORT]/NAMESPACE`` or ``file:///path``.

    Example:
        >>> r = Remote("team", "oci://127.0.0.1:5000/team")
        >>> (r.host, r.repository("mnist-mlp"))
        ('127.0.0.1:5000', 'team/mnist-mlp')
    """

    name: str
    url: str
    insecure: bool = False
    default: bool = False

    @property
    def kind(self) -> str:
        return "file" if self.url.startswith("file://") else "oci"

    @property
    def host(self) -> str:
        return urlparse(self.url).netloc if self.kind == "oci" else ""

    @property
    def namespace(self) -> str:
        return urlparse(self.url).path.strip("/") if self.kind == "oci" else ""

    @property
    def path(self) -> Path:
        return Path(unquote(urlparse(self.url).path))

    def repository(self, name: str) -> str:
        return f"{self.namespace}/{name}" if self.namespace else name

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "insecure": self.insecure, "default": self.default}

    def __str__(self) -> str:
        flags = [f for f, on in (("insecure", self.insecure), ("default", self.default)) if on]
        return f"{self.name}  {self.url}" + (f"  ({', '.join(flags)})" if flags else "")


class RemoteList(list[Remote]):
    """The configured remotes (``remote ls``)."""

    def __str__(self) -> str:
        if not self:
            return "no remotes (add one: modelpack remote add NAME oci://HOST:PORT/NAMESPACE or file:///path)"
        return "\n".join(str(r) for r in self)

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self]


def check_url(url: str) -> str:
    """A remote URL in its normal form; a malformed one is a :class:`UsageError` with the forms that work.

    Example:
        >>> check_url("oci://127.0.0.1:5000/team/")
        'oci://127.0.0.1:5000/team'
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise UsageError(f"bad file remote {url!r}", hint="use file:///absolute/path")
        return url
    if parsed.scheme != "oci" or not parsed.netloc:
        raise UsageError(f"bad remote URL {url!r}", hint="use oci://HOST[:PORT]/NAMESPACE or file:///path")
    namespace = parsed.path.strip("/")
    if namespace and not REPO_RE.match(namespace):
        raise UsageError(f"bad namespace {namespace!r} in {url!r}", hint="lowercase letters, digits, . _ - and /")
    return f"oci://{parsed.netloc}" + (f"/{namespace}" if namespace else "")


def add_remote(name: str, url: str, *, insecure: bool = False, default: bool = False) -> Remote:
    """Add (or replace) a named remote in config.toml; the first remote becomes the default.

    Example:
        >>> add_remote("share", "file:///tmp/shared-models")  # doctest: +SKIP
        Remote(name='share', url='file:///tmp/shared-models', insecure=False, default=True)
    """
    if not NAME_RE.match(name or ""):
        raise UsageError(f"bad remote name {name!r}", hint="lowercase letters, digits and . _ - (e.g. team)")
    url = check_url(url)
    with edit_config() as cfg:
        remotes = cfg.setdefault("remotes", {})
        entry: dict[str, Any] = {"url": url}
        if insecure:
            entry["insecure"] = True
        remotes[name] = entry
        if default or not cfg.get("default_remote") or cfg.get("default_remote") not in remotes:
            cfg["default_remote"] = name
    return get_remote(name)


def remove_remote(name: str) -> Remote:
    """Remove a named remote from config.toml (the registry is not touched)."""
    existing = get_remote(name)
    with edit_config() as cfg:
        cfg.get("remotes", {}).pop(name, None)
        if cfg.get("default_remote") == name:
            rest = sorted(cfg.get("remotes", {}))
            if rest:
                cfg["default_remote"] = rest[0]
            else:
                cfg.pop("default_remote", None)
    return existing


def list_remotes() -> RemoteList:
    """Every configured remote.

    Example:
        >>> [r.name for r in list_remotes()]  # doctest: +SKIP
        ['team']
    """
    cfg = load_config()
    default = cfg.get("default_remote")
    out = RemoteList()
    for name, entry in remotes_table().items():
        out.append(Remote(name, str(entry["url"]), bool(entry.get("insecure", False)), name == default))
    return out


def get_remote(name: str | None = None) -> Remote:
    """A remote by name; without a name, the default one. A URL works as an unnamed remote."""
    if name and "://" in name:
        url = check_url(name)
        return Remote(name=urlparse(url).netloc or "file", url=url, insecure=is_loopback(urlparse(url).hostname or ""))
    remotes = list_remotes()
    if not remotes:
        raise UsageError("no remote is configured", hint="modelpack remote add NAME oci://HOST:PORT/NAMESPACE (or file:///path)")
    if name is None:
        return next((r for r in remotes if r.default), remotes[0])
    for r in remotes:
        if r.name == name:
            return r
    raise UsageError(f"no remote named {name!r}", hint=f"remotes: {', '.join(r.name for r in remotes)}")


def is_loopback(hostname: str) -> bool:
    """Whether a host name is this machine (plain HTTP is then the default).

    Example:
        >>> is_loopback("127.0.0.1")
        True
    """
    return hostname in ("localhost", "127.0.0.1", "::1")


def split_remote_ref(remote_ref: str) -> tuple[Remote, Reference, str]:
    """``(remote, reference, repository)`` for ``REMOTE/NAME:TAG`` or ``HOST[:PORT]/REPO:TAG``.

    Example:
        >>> split_remote_ref("127.0.0.1:5000/team/mnist-mlp:1")[2]
        'team/mnist-mlp'
    """
    r = parse(remote_ref)
    if r.remote is None:
        raise UsageError(f"{remote_ref!r} names a local bundle", hint="pull REMOTE/NAME:TAG (see `modelpack remote ls`)")
    if r.remote_is_host:
        known = [x for x in list_remotes() if x.kind == "oci" and x.host == r.remote]
        host_remote = Remote(
            name=known[0].name if known else r.remote,
            url=f"oci://{r.remote}",
            insecure=known[0].insecure if known else is_loopback(r.remote.rsplit(":", 1)[0]),
        )
        return host_remote, r, r.name
    target = get_remote(r.remote)
    return target, r, target.repository(r.name)
