"""Remotes: OCI registries and OCI layout directories; publish, pull and list (DESIGN.md §2).

Remotes are named in ``$NBMODELPACK_HOME/config.toml``::

    default_remote = "team"
    [remotes.team]
    url = "oci://127.0.0.1:5000/team"   # or "file:///srv/share/models"
    insecure = true                      # plain HTTP

``REMOTE/NAME:TAG`` names bundle ``NAME`` in repository ``NAMESPACE/NAME`` of
that registry (or in the layout directory); ``HOST[:PORT]/REPO:TAG`` names a
registry directly. Publishing sends the exact local manifest bytes (same
digest) under the version number, ``latest`` and any extra tag; pulling
re-hashes every blob and the manifest before anything enters the local store.

Example:
    >>> from nbmodelpack import remote
    >>> remote.add_remote("team", "oci://127.0.0.1:5000/team", insecure=True)  # doctest: +SKIP
    >>> remote.publish("mnist-mlp:1", "team").tags  # doctest: +SKIP
    ['1', 'latest']
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..bundle import mediatypes as mt
from ..bundle.info import BundleInfo, human_bytes
from ..bundle.manifest import Descriptor, Manifest, parse_manifest, sha256_digest
from ..bundle.refs import NAME_RE, REPO_RE, Reference, parse, validate_tag
from ..config import edit_config, load_config, remotes_table
from ..errors import (
    BundleFormatError,
    BundleNotFound,
    IntegrityError,
    ModelPackError,
    RemoteError,
    UsageError,
)
from ..progress import progress
from ..store import Store
from .credentials import Credentials, docker_config_path, read_credentials, save_credentials
from .registry import RegistryClient, chunk_size

_WORKERS = 4


# ---- remotes in config.toml ----------------------------------------------------------------
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


def _check_url(url: str) -> str:
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
    url = _check_url(url)
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
        url = _check_url(name)
        return Remote(name=urlparse(url).netloc or "file", url=url, insecure=_is_loopback(urlparse(url).hostname or ""))
    remotes = list_remotes()
    if not remotes:
        raise UsageError("no remote is configured", hint="modelpack remote add NAME oci://HOST:PORT/NAMESPACE (or file:///path)")
    if name is None:
        return next((r for r in remotes if r.default), remotes[0])
    for r in remotes:
        if r.name == name:
            return r
    raise UsageError(f"no remote named {name!r}", hint=f"remotes: {', '.join(r.name for r in remotes)}")


def _is_loopback(hostname: str) -> bool:
    return hostname in ("localhost", "127.0.0.1", "::1")


def _client(remote: Remote) -> RegistryClient:
    return RegistryClient(remote.host, insecure=remote.insecure, credentials=read_credentials(remote.host), remote_name=remote.name)


# ---- login ---------------------------------------------------------------------------------
def login(remote: str, username: str | None = None, password: str | None = None, *, token: str | None = None) -> str:
    """Check credentials against a registry, then save them in the Docker/ORAS credential file.

    Nothing is saved when the registry refuses them. Returns a one-line message.

    Example:
        >>> login("team", "alice", getpass.getpass())  # doctest: +SKIP
        'logged in to 127.0.0.1:5000 as alice (saved in ~/.docker/config.json)'
    """
    r = get_remote(remote)
    if r.kind == "file":
        raise UsageError(f"{r.name} is a directory remote; it needs no login")
    if token:
        creds = Credentials(token=token)
    elif username and password:
        creds = Credentials(username, password)
    else:
        raise UsageError("give a username and password, or a token")
    client = RegistryClient(r.host, insecure=r.insecure, credentials=creds, remote_name=r.name)
    client.ping()
    path = save_credentials(r.host, creds)
    who = f" as {username}" if username and not token else " with a token"
    return f"logged in to {r.host}{who} (saved in {path})"


# ---- publish -------------------------------------------------------------------------------
@dataclass
class PublishResult:
    """What ``publish`` did: where the version went and how much was sent."""

    ref: str
    digest: str
    remote: str
    location: str
    tags: list[str]
    blobs_sent: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_sent: int = 0
    info: BundleInfo | None = field(default=None, repr=False)

    def __str__(self) -> str:
        sent = f"{self.blobs_sent} blob(s) sent ({human_bytes(self.bytes_sent)})"
        other = f", {self.blobs_skipped} already there" if self.blobs_skipped else ""
        mounted = f", {self.blobs_mounted} mounted" if self.blobs_mounted else ""
        return f"published {self.ref} to {self.location} (tags {', '.join(self.tags)}): {sent}{other}{mounted}"

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "info"}
        out["pull"] = f"{self.remote}/{self.ref.split(':')[0]}:{self.tags[0]}"
        return out


def publish(
    ref: str, remote: str | None = None, *, tag: str | None = None, store: Store | str | None = None
) -> PublishResult:
    """Publish a local version to a remote: blobs it lacks, then the manifest under its tags.

    Tags pushed: the version number, ``latest`` and ``tag``. The manifest bytes are the
    local ones, so the remote digest is the local digest.

    Example:
        >>> publish("mnist-mlp:1", "team").location  # doctest: +SKIP
        '127.0.0.1:5000/team/mnist-mlp'
    """
    from ..store import get_store

    local = get_store(store)
    target = get_remote(remote)
    bundle = local.open(ref)
    info = bundle.info
    tags = [str(info.version)] if info.version is not None else []
    tags.append("latest")
    if tag:
        validate_tag(tag)
        if tag not in tags:
            tags.append(tag)
    result = PublishResult(ref=info.ref, digest=info.digest, remote=target.name, location="", tags=tags, info=info)
    if target.kind == "file":
        _publish_to_layout(local, bundle.manifest, bundle.name, target, result)
    else:
        _publish_to_registry(local, bundle.manifest, bundle.name, target, result)
    local.record_published(info.digest, f"{target.name}/{bundle.name}:{tags[0]}")
    info.published = local.published().get(info.digest, [])
    return result


def _blobs(manifest: Manifest) -> list[Descriptor]:
    return [manifest.config, *manifest.layers]


def _publish_to_layout(local: Store, manifest: Manifest, name: str, target: Remote, result: PublishResult) -> None:
    try:
        dest = Store(target.path)
    except ModelPackError as exc:
        raise RemoteError(f"cannot use {target.url}: {exc}") from exc
    result.location = str(target.path)
    todo = [d for d in _blobs(manifest) if not dest.has_blob(d.digest)]
    result.blobs_skipped = len(_blobs(manifest)) - len(todo)
    with progress(total=sum(d.size for d in todo), desc=f"publish {name}") as bar:
        for d in todo:
            dest.put_chunks(_counting(local.iter_blob(d.digest), bar.update), expected=d.digest, what=d.filepath or "config")
            result.blobs_sent += 1
            result.bytes_sent += d.size
    dest.add_manifest(name, manifest.raw, result.tags)


def _counting(chunks: Iterable[bytes], update: Callable[[int], Any]) -> Iterator[bytes]:
    for piece in chunks:
        update(len(piece))
        yield piece


def _mount_sources(local: Store, target: Remote, repo: str) -> dict[str, str]:
    """``{blob digest: repository}`` for blobs of versions we published to other repos of this registry."""
    out: dict[str, str] = {}
    remotes = {r.name: r for r in list_remotes()}
    for digest, places in local.published().items():
        for place in places:
            rname, _, rest = place.partition("/")
            other = remotes.get(rname)
            if other is None or other.kind != "oci" or other.host != target.host:
                continue
            other_repo = other.repository(rest.rsplit(":", 1)[0])
            if other_repo == repo:
                continue
            try:
                manifest = local.manifest(digest)
            except ModelPackError:
                continue
            for d in _blobs(manifest):
                out.setdefault(d.digest, other_repo)
    return out


def _publish_to_registry(local: Store, manifest: Manifest, name: str, target: Remote, result: PublishResult) -> None:
    client = _client(target)
    repo = target.repository(name)
    result.location = f"{target.host}/{repo}"
    blobs = _blobs(manifest)
    with ThreadPoolExecutor(_WORKERS) as pool:
        present = list(pool.map(lambda d: client.has_blob(repo, d.digest), blobs))
    todo = [d for d, there in zip(blobs, present, strict=True) if not there]
    result.blobs_skipped = len(blobs) - len(todo)
    if todo:
        sources = _mount_sources(local, target, repo)
        mounted = {d.digest for d in todo if d.digest in sources and client.mount(repo, d.digest, sources[d.digest])}
        result.blobs_mounted = len(mounted)
        todo = [d for d in todo if d.digest not in mounted]
    chunk = chunk_size()
    with progress(total=sum(d.size for d in todo), desc=f"publish {name}") as bar:
        # biggest first, so small blobs fill in beside it
        order = sorted(todo, key=lambda d: -d.size)
        with ThreadPoolExecutor(_WORKERS) as pool:
            sent = list(pool.map(lambda d: client.upload_blob(repo, d.digest, d.size, local.blob_path(d.digest), on_bytes=bar.update, chunk=chunk), order))
    result.blobs_sent = len(todo)
    result.bytes_sent = sum(sent)
    for t in result.tags:
        client.put_manifest(repo, t, manifest.raw, manifest.digest)


# ---- pull ----------------------------------------------------------------------------------
def _split_remote_ref(remote_ref: str) -> tuple[Remote, Reference, str]:
    """``(remote, reference, repository)`` for ``REMOTE/NAME:TAG`` or ``HOST[:PORT]/REPO:TAG``."""
    r = parse(remote_ref)
    if r.remote is None:
        raise UsageError(f"{remote_ref!r} names a local bundle", hint="pull REMOTE/NAME:TAG (see `modelpack remote ls`)")
    if r.remote_is_host:
        known = [x for x in list_remotes() if x.kind == "oci" and x.host == r.remote]
        host_remote = Remote(
            name=known[0].name if known else r.remote,
            url=f"oci://{r.remote}",
            insecure=known[0].insecure if known else _is_loopback(r.remote.rsplit(":", 1)[0]),
        )
        return host_remote, r, r.name
    target = get_remote(r.remote)
    return target, r, target.repository(r.name) if target.kind == "oci" else r.name


def pull(remote_ref: str, *, as_name: str | None = None, store: Store | str | None = None) -> BundleInfo:
    """Pull ``REMOTE/NAME:TAG`` into the local store, re-hashing every blob and the manifest.

    Nothing is written unless every byte verifies. The local version keeps the
    remote's version number (and a non-numeric tag such as ``latest``).

    Example:
        >>> pull("team/mnist-mlp:1").ref  # doctest: +SKIP
        'mnist-mlp:1'
    """
    from ..store import get_store

    local = get_store(store)
    target, ref, repo = _split_remote_ref(remote_ref)
    reference = ref.digest or ref.tag or "latest"
    name = as_name or repo.rsplit("/", 1)[-1]
    if not NAME_RE.match(name):
        raise UsageError(f"cannot use {name!r} as a local name", hint="pass --as NAME")
    if target.kind == "file":
        source = _open_layout(target)
        try:
            _, digest = source.resolve(f"{repo}@{ref.digest}" if ref.digest else f"{repo}:{reference}")
        except BundleNotFound as exc:
            raise BundleNotFound(remote_ref, hint=f"`modelpack ls --remote {target.name}` lists what is there") from exc
        raw = source.read_blob(digest, what="manifest")

        def fetch(d: Descriptor, update: Callable[[int], Any]) -> Iterator[bytes]:
            if not source.has_blob(d.digest):
                raise IntegrityError(f"{d.filepath or 'config'} is missing from {target.url}")
            return _counting(source.iter_blob(d.digest), update)
    else:
        client = _client(target)
        raw, digest = client.get_manifest(repo, reference)

        def fetch(d: Descriptor, update: Callable[[int], Any]) -> Iterator[bytes]:
            return client.stream_blob(repo, d.digest, on_bytes=update)

    return _pull_into(local, name, raw, digest, fetch, ref.tag, origin=remote_ref)


def _open_layout(target: Remote) -> Store:
    if not (target.path / "index.json").exists():
        raise RemoteError(f"{target.url} is not an OCI layout (no index.json)", hint="check the path with `modelpack remote ls`")
    return Store(target.path, create=False)


def _pull_into(
    local: Store,
    name: str,
    raw: bytes,
    digest: str,
    fetch: Callable[[Descriptor, Callable[[int], Any]], Iterator[bytes]],
    tag: str | None,
    *,
    origin: str,
) -> BundleInfo:
    if sha256_digest(raw) != digest:
        raise IntegrityError(f"manifest of {origin} does not match {digest[:19]}…", hint="the remote copy is damaged; nothing was written")
    manifest = parse_manifest(raw, digest)
    if manifest.config.media_type != mt.CONFIG:
        raise BundleFormatError(f"{origin} is not a ModelPack bundle (config type {manifest.config.media_type})")
    version = BundleInfo.from_manifest(manifest, name=name).version
    tags: list[str] = [str(version)] if version is not None else []
    if tag and not tag.isdigit() and tag not in tags:
        tags.append(tag)
    # Tag → digest of this name's local versions, from index.json alone.
    existing = {t: d for (n, d), ts in local.refs().items() if n == name for t in ts}
    for t in tags:
        if t.isdigit() and existing.get(t, digest) != digest:
            raise RemoteError(f"local {name}:{t} is a different bundle than {origin}", hint="pull it under another name with --as NAME")
    if "latest" not in existing and "latest" not in tags:
        tags.append("latest")
    if not tags:
        tags = ["latest"]
    todo = [d for d in _blobs(manifest) if not local.has_blob(d.digest)]
    # Blobs land in a staging layout inside the store (same filesystem) and move
    # into blobs/ only when every one verified: a refused pull writes nothing.
    staging = Store(local.root / f".pull-{uuid.uuid4().hex}")
    try:
        with progress(total=sum(d.size for d in todo), desc=f"pull {name}") as bar:

            def one(d: Descriptor) -> None:
                staging.put_chunks(fetch(d, bar.update), expected=d.digest, what=d.filepath or "config")

            with ThreadPoolExecutor(_WORKERS) as pool:
                for _ in pool.map(one, sorted(todo, key=lambda d: -d.size)):
                    pass
        _check_trust(local, staging, name, manifest, todo)
        for d in todo:
            os.replace(staging.blob_path(d.digest), local.blob_path(d.digest))
        return local.add_manifest(name, raw, tags)
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)


def _check_trust(local: Store, staging: Store, name: str, manifest: Manifest, todo: list[Descriptor]) -> None:
    """Under a trust policy (issue 5), verify the signature while the blobs are still staged."""
    from ..signing import enforce_trust_policy, trust_policy
    from ..store import StoredBundle

    if not trust_policy().get("require_signature"):
        return
    fetched = {d.digest for d in todo}
    for d in manifest.layers:  # the staging layout sees blobs the store already had through links
        if d.digest not in fetched and not staging.has_blob(d.digest):
            os.link(local.blob_path(d.digest), staging.blob_path(d.digest))
    enforce_trust_policy(StoredBundle(staging, name, manifest))


# ---- listing a remote ----------------------------------------------------------------------
def list_remote(name: str | None = None) -> list[BundleInfo]:
    """Every bundle version on a remote, from manifests only (never weights); ``remote`` is set.

    On a registry, repositories come from the catalog (where allowed) under the
    remote's namespace, else from what this store published there.

    Example:
        >>> [i.ref for i in list_remote("team")]  # doctest: +SKIP
        ['team/mnist-mlp:2', 'team/mnist-mlp:1']
    """
    target = get_remote(name)
    if target.kind == "file":
        infos = _open_layout(target).list() if (target.path / "index.json").exists() else []
        for i in infos:
            i.remote = target.name
            i.published = []
        return infos
    client = _client(target)
    client.ping()
    prefix = f"{target.namespace}/" if target.namespace else ""
    catalog = client.catalog()
    if catalog is not None:
        repos = [r for r in catalog if r.startswith(prefix) and NAME_RE.match(r[len(prefix):])]
    else:
        from ..store import get_store

        places = [p for ps in get_store().published().values() for p in ps if p.startswith(f"{target.name}/")]
        repos = sorted({target.repository(p.split("/", 1)[1].rsplit(":", 1)[0]) for p in places})

    def manifest_of(repo_tag: tuple[str, str]) -> tuple[str, str, bytes, str] | None:
        repo, tag = repo_tag
        try:
            raw, digest = client.get_manifest(repo, tag)
        except (BundleNotFound, IntegrityError):
            return None  # deleted meanwhile, or damaged: a listing shows what can be read
        return repo, tag, raw, digest

    # One pool for every manifest GET, across repositories and their tags: a
    # repository of 200 tags is 200 round trips, which only parallelism hides.
    with ThreadPoolExecutor(_WORKERS) as pool:
        pairs = [(repo, t) for repo, tags in zip(repos, pool.map(client.tags, repos), strict=True) for t in tags]
        fetched = [m for m in pool.map(manifest_of, pairs) if m is not None]
    by_digest: dict[tuple[str, str], tuple[bytes, list[str]]] = {}
    for repo, tag, raw, digest in fetched:
        by_digest.setdefault((repo, digest), (raw, []))[1].append(tag)
    infos = []
    for (repo, digest), (raw, tags) in by_digest.items():
        try:
            manifest = parse_manifest(raw, digest)
        except BundleFormatError:
            continue
        if manifest.config.media_type != mt.CONFIG:
            continue  # not a ModelPack bundle
        infos.append(BundleInfo.from_manifest(manifest, name=repo[len(prefix):], tags=tags, remote=target.name))
    infos.sort(key=lambda i: (i.name, -(i.version or 0), i.digest))
    return infos


__all__ = [
    "PublishResult",
    "Remote",
    "RemoteList",
    "add_remote",
    "docker_config_path",
    "get_remote",
    "list_remote",
    "list_remotes",
    "login",
    "publish",
    "pull",
    "remove_remote",
]
