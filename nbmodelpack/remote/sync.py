"""Publish and pull, written once over :class:`~.transport.Transport`.

Publishing sends the exact local manifest bytes (same digest) under the version
number, ``latest`` and any extra tag, after the blobs the remote lacks (mounted
from another repository of the same registry where we published them before).
Pulling reads the manifest under its cap and parses it before anything else, then
fetches the blobs the local store lacks into ``<store root>/staging/pull-<uuid>/``,
each stopped at its descriptor's size and re-hashed; only when every one verified
(and the pull checks registered by higher layers, such as the signature trust
policy, accepted the staged bundle) do they move into the store. The staging
directory is removed on every way out.

Example:
    >>> from nbmodelpack.remote.memory import MemoryTransport
    >>> t = MemoryTransport()
    >>> publish_to(t, store, store.open("mnist-mlp:1").manifest, "mnist-mlp", ["1"]).blobs_sent  # doctest: +SKIP
    4
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..bundle import mediatypes as mt
from ..bundle.format import human_bytes
from ..bundle.info import BundleInfo
from ..bundle.manifest import Descriptor, Manifest, parse_manifest, sha256_digest
from ..bundle.refs import NAME_RE, validate_tag
from ..config import load_config
from ..errors import (
    BundleFormatError,
    BundleNotFound,
    IntegrityError,
    ModelPackError,
    SignatureError,
    UsageError,
)
from ..progress import progress
from ..store import Store, StoredBundle, get_store
from ..store.blobs import Blobs
from ..store.index import arrival_tags
from ..store.records import Identity
from . import published
from .config import Remote, get_remote, list_remotes, split_remote_ref
from .connect import open_transport
from .transport import Transport, check_manifest_bytes

_WORKERS = 4
T = TypeVar("T")
PullCheck = Callable[[StoredBundle], Any]
_pull_checks: list[PullCheck] = []


def register_pull_check(check: PullCheck) -> None:
    """Have every pull call ``check(staged_bundle)`` before the bundle enters the store (raise to refuse).

    The signing layer registers its trust policy here, so this layer needs no import of it.

    Example:
        >>> register_pull_check(enforce_trust_policy)  # doctest: +SKIP
    """
    if check not in _pull_checks:
        _pull_checks.append(check)


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


# ---- publish -------------------------------------------------------------------------------
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
    repo = target.repository(bundle.name)
    transport = open_transport(target)
    sources = _mount_sources(local, target, repo) if target.kind == "oci" else {}
    result = publish_to(transport, local, bundle.manifest, repo, tags, mount_from=sources, label=bundle.name)
    result.ref, result.remote, result.info = info.ref, target.name, info
    published.record(local, info.digest, f"{target.name}/{bundle.name}:{tags[0]}")
    info.published = published.places(local).get(info.digest, [])
    return result


def publish_to(
    transport: Transport,
    local: Store,
    manifest: Manifest,
    repo: str,
    tags: list[str],
    *,
    mount_from: Mapping[str, str] | None = None,
    label: str = "",
) -> PublishResult:
    """Send ``manifest`` and the blobs ``transport`` lacks in ``repo``; tag it. ``mount_from``: digest → repository.

    Example:
        >>> publish_to(MemoryTransport(), store, manifest, "ns/x", ["1", "latest"]).blobs_sent  # doctest: +SKIP
        4
    """
    result = PublishResult(ref=label, digest=manifest.digest, remote=transport.name, location=transport.where(repo), tags=tags)
    blobs = list({d.digest: d for d in (manifest.config, *manifest.layers)}.values())  # two files may share one blob
    with ThreadPoolExecutor(_WORKERS) as pool:
        present = list(pool.map(lambda d: transport.has_blob(repo, d.digest), blobs))
    todo = [d for d, there in zip(blobs, present, strict=True) if not there]
    result.blobs_skipped = len(blobs) - len(todo)
    sources = mount_from or {}
    mounted = {d.digest for d in todo if d.digest in sources and transport.mount(repo, d.digest, sources[d.digest])}
    result.blobs_mounted = len(mounted)
    todo = [d for d in todo if d.digest not in mounted]
    with progress(total=sum(d.size for d in todo), desc=f"publish {label or repo}") as bar:
        order = sorted(todo, key=lambda d: -d.size)  # biggest first, so small blobs fill in beside it
        sent = _in_parallel(lambda d, on_bytes: transport.put_blob(repo, d, local.blob_path(d.digest), on_bytes), order, bar.update)
    result.blobs_sent = len(todo)
    result.bytes_sent = sum(sent)
    transport.put_manifest(repo, manifest.raw, manifest.digest, tags)
    return result


class _Stopped(Exception):
    """Raised in a transfer worker at a block boundary once the whole transfer is being abandoned."""


def _in_parallel(work: Callable[[Descriptor, Callable[[int], None]], T], items: list[Descriptor], update: Callable[[int], Any]) -> list[T]:
    """``work(item, on_bytes)`` for every item on a few threads; on any failure or Ctrl-C, every worker stops at its next block.

    ``on_bytes`` runs after an upload chunk was accepted (and its session saved), so
    raising there leaves each upload session where the remote can resume it (a
    connection cut inside a chunk makes docker-registry 2.8 cancel the session).
    Without this, an interrupted transfer would first run every queued one to its end.
    """
    stop = threading.Event()

    def on_bytes(n: int) -> None:
        update(n)
        if stop.is_set():
            raise _Stopped

    pool = ThreadPoolExecutor(_WORKERS)
    futures = [pool.submit(work, item, on_bytes) for item in items]
    try:
        return [f.result() for f in futures]
    except BaseException:
        stop.set()
        for f in futures:
            f.cancel()
        raise
    finally:
        pool.shutdown(wait=True)  # the workers stop at their next block


def _mount_sources(local: Store, target: Remote, repo: str) -> dict[str, str]:
    """``{blob digest: repository}`` for blobs of versions we published to other repos of this registry."""
    out: dict[str, str] = {}
    remotes = {r.name: r for r in list_remotes()}
    for digest, places in published.places(local).items():
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
            for d in (manifest.config, *manifest.layers):
                out.setdefault(d.digest, other_repo)
    return out


# ---- pull ----------------------------------------------------------------------------------
def pull(remote_ref: str, *, as_name: str | None = None, store: Store | str | None = None) -> BundleInfo:
    """Pull ``REMOTE/NAME:TAG`` into the local store, re-hashing every blob and the manifest.

    Nothing is written unless every byte verifies. The local version keeps the
    remote's version number (and a non-numeric tag such as ``latest``).

    Example:
        >>> pull("team/mnist-mlp:1").ref  # doctest: +SKIP
        'mnist-mlp:1'
    """
    local = get_store(store)
    target, ref, repo = split_remote_ref(remote_ref)
    name = as_name or repo.rsplit("/", 1)[-1]
    if not NAME_RE.match(name):
        raise UsageError(f"cannot use {name!r} as a local name", hint="pass --as NAME")
    reference = ref.digest or ref.tag or "latest"
    return pull_from(open_transport(target), local, repo, reference, name=name, tag=ref.tag, origin=remote_ref)


def pull_from(
    transport: Transport, local: Store, repo: str, reference: str, *, name: str, tag: str | None = None, origin: str = ""
) -> BundleInfo:
    """Pull ``repo`` at ``reference`` (tag or digest) from ``transport`` into ``local`` as ``name``.

    Example:
        >>> pull_from(MemoryTransport(), store, "ns/x", "1", name="x")  # doctest: +SKIP
    """
    origin = origin or f"{transport.name}/{repo}:{reference}"
    try:
        raw, digest = transport.get_manifest(repo, reference)
    except BundleNotFound as exc:
        raise BundleNotFound(origin, hint=exc.hint or f"`modelpack ls --remote {transport.name}` lists what is there") from exc
    if sha256_digest(raw) != digest or (reference.startswith("sha256:") and digest != reference):
        raise IntegrityError(f"manifest of {origin} does not match {digest[:19]}…", hint="the remote copy is damaged; nothing was written")
    check_manifest_bytes(raw, where=transport.where(repo))
    manifest = parse_manifest(raw, digest)  # refuses odd or duplicate filepaths before anything is written
    if manifest.config.media_type != mt.CONFIG:
        raise BundleFormatError(f"{origin} is not a ModelPack bundle (config type {manifest.config.media_type})", hint="pull it with a tool made for that artifact type")
    tags = _local_tags(local, name, manifest, tag, origin)
    checks = list(_pull_checks)
    if not checks and _trust_required():
        raise SignatureError(
            "the trust policy requires signatures, but signature checking is not loaded",
            hint="pull through nbmodelpack.pull or the modelpack CLI",
        )
    unique = {d.digest: d for d in (manifest.config, *manifest.layers)}  # two files may share one blob
    todo = [d for d in unique.values() if not local.has_blob(d.digest)]
    staging = local.new_staging("pull")  # same filesystem as the store: blobs move by rename
    try:
        staged = Store(staging)
        _fetch(transport, repo, staged, todo, label=name)
        for check in checks:  # they see the whole bundle: what was fetched, and what the store had
            check(StoredBundle(_StagedView(staged, local), name, manifest))
        for d in todo:
            local.adopt_blob(staged, d.digest)  # a rename; the verification record comes along
        return local.add_manifest(name, raw, tags)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # only when no other pull or import is staging there


class _StagedView(Store):
    """A staged pull seen whole: its fetched blobs, else the local store's (nothing is linked or copied)."""

    def __init__(self, staged: Store, local: Store) -> None:
        super().__init__(staged.root, create=False)
        self.blobs = _FallbackBlobs(staged.blobs, local.blobs)


class _FallbackBlobs(Blobs):
    """Reads a staged blob where there is one, else the local store's (read-only use)."""

    def __init__(self, staged: Blobs, local: Blobs) -> None:
        super().__init__(staged.dir)
        self._staged = staged
        self._local = local

    def path(self, digest: str) -> Path:
        path = super().path(digest)
        return path if path.is_file() else self._local.path(digest)

    def _owner(self, digest: str) -> Blobs:
        return self._staged if super().path(digest).is_file() else self._local

    def is_recorded(self, digest: str, ident: Identity | None = None) -> bool:
        return self._owner(digest).is_recorded(digest, ident)

    def record(self, digest: str, ident: Identity | None = None) -> None:
        # Only renewals after hard-linking (signature checks): each store keeps its own records.
        self._owner(digest).record(digest, ident)


def _fetch(transport: Transport, repo: str, staged: Store, todo: Iterable[Descriptor], *, label: str) -> None:
    order = sorted(todo, key=lambda d: -d.size)
    with progress(total=sum(d.size for d in order), desc=f"pull {label}") as bar:

        def one(d: Descriptor, on_bytes: Callable[[int], None]) -> None:
            staged.put_chunks(transport.get_blob(repo, d, on_bytes), expected=d.digest, what=d.filepath or "config")

        _in_parallel(one, order, bar.update)


def _local_tags(local: Store, name: str, manifest: Manifest, tag: str | None, origin: str) -> list[str]:
    """The local tags a pulled version gets: its version number and the tag asked for, which moves here."""
    version = BundleInfo.from_manifest(manifest, name=name).version
    wanted = [str(version)] if version is not None else []
    if tag and not tag.isdigit():
        wanted.append(tag)
    existing = {t: d for (n, d), ts in local.refs().items() if n == name for t in ts}
    tags = arrival_tags(name, manifest.digest, wanted, existing, origin=origin, hint="pull it under another name with --as NAME", move_named=True)
    return tags or ["latest"]


def _trust_required() -> bool:
    trust = load_config().get("trust", {})
    return bool(isinstance(trust, dict) and trust.get("require_signature"))
