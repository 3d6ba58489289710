"""Publish and pull, written once over :class:`~.transport.Transport`.

Publishing sends the exact local manifest bytes (same digest) under the version
number, ``latest`` and any extra tag, after the blobs the remote lacks (mounted
from another repository of the same registry where we published them before).
Blobs move several at once (:mod:`.transfers`), biggest first. Pulling reads the
manifest under its cap and parses it before anything else, then fetches the blobs
the local store lacks straight into the store's blob directory, each stopped at
its descriptor's size and hashed as it arrives; a blob file appears there only
once it is whole and verified. The version is indexed only when every blob is
there and the pull checks registered by higher layers (such as the signature
trust policy) accepted it. A refused pull (a damaged blob, a refused signature, a
full disk) removes the blobs it brought; an interrupted one (Ctrl-C, a lost
connection, a killed process) keeps them, so pulling again fetches only the rest
(``gc`` removes them if no pull comes back for them).

Example:
    >>> from nbmodelpack.remote.memory import MemoryTransport
    >>> t = MemoryTransport()
    >>> publish_to(t, store, store.open("mnist-mlp:1").manifest, "mnist-mlp", ["1"]).blobs_sent  # doctest: +SKIP
    4
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

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
    RemoteUnavailable,
    SignatureError,
    UsageError,
)
from ..progress import progress
from ..store import Store, StoredBundle, get_store
from ..store.index import arrival_tags
from ..store.maintenance import drop_unreferenced
from . import published
from .config import Remote, get_remote, list_remotes, split_remote_ref
from .connect import open_transport
from .transfers import in_parallel, receive, workers
from .transport import Transport, check_manifest_bytes

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
    with ThreadPoolExecutor(workers()) as pool:
        present = list(pool.map(lambda d: transport.has_blob(repo, d.digest), blobs))
    todo = [d for d, there in zip(blobs, present, strict=True) if not there]
    result.blobs_skipped = len(blobs) - len(todo)
    sources = mount_from or {}
    mounted = {d.digest for d in todo if d.digest in sources and transport.mount(repo, d.digest, sources[d.digest])}
    result.blobs_mounted = len(mounted)
    todo = [d for d in todo if d.digest not in mounted]
    with progress(total=sum(d.size for d in todo), desc=f"publish {label or repo}") as bar:
        order = sorted(todo, key=lambda d: -d.size)  # biggest first, so small blobs fill in beside it
        sent = in_parallel(lambda d, on_bytes: _put_blob(transport, repo, local, d, on_bytes), order, bar.update)
    result.blobs_sent = len(todo)
    result.bytes_sent = sum(sent)
    transport.put_manifest(repo, manifest.raw, manifest.digest, tags)
    return result


def _put_blob(transport: Transport, repo: str, local: Store, d: Descriptor, on_bytes: Callable[[int], None]) -> int:
    """Send one local blob without re-hashing it: the remote checks its digest, and a mismatch means the local copy changed."""
    try:
        return transport.put_blob(repo, d, local.blob_path(d.digest), on_bytes)
    except IntegrityError as exc:
        raise IntegrityError(
            f"{d.filepath or 'config'} in the local store does not match its digest {d.digest[:19]}… ({transport.name} refused it)",
            hint="the local copy changed since it was stored: run `modelpack fsck`, then re-pack or re-pull that version",
        ) from exc


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

    No version is made unless every byte verifies (blobs enter the store one by one, each
    whole and hashed; an interrupted pull keeps them for the next). The local version keeps the
    remote's version number (and a non-numeric tag such as ``latest``).

    Example:
        >>> pull("team/mnist-mlp:1").ref  # doctest: +SKIP
        'mnist-mlp:1'
    """
    local = get_store(store)
    target, ref, repo = split_remote_ref(remote_ref)
    name = as_name or repo.rsplit("/", 1)[-1]
    if not NAME_RE.match(name):
        raise UsageError(f"cannot use {name!r} as a local name", hint="pass as_name=NAME")
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
    todo = [d for d in unique.values() if not local.has_blob(d.digest)]  # kept by an earlier, interrupted pull too
    arrived: list[str] = []
    try:
        _fetch(transport, repo, local, todo, label=name, arrived=arrived)
        for check in checks:  # they see the whole bundle: what was fetched, and what the store had
            check(StoredBundle(local, name, manifest))
        return local.add_manifest(name, raw, tags)
    except (KeyboardInterrupt, RemoteUnavailable):
        raise  # interrupted, or the connection was lost: the verified blobs stay for the next pull
    except BaseException:
        with contextlib.suppress(ModelPackError, OSError):  # the refusal is the error to show; gc removes what stays
            drop_unreferenced(local, arrived)  # refused: nothing of it stays
        raise


def _fetch(transport: Transport, repo: str, local: Store, todo: Iterable[Descriptor], *, label: str, arrived: list[str]) -> None:
    """Fetch ``todo`` into ``local``, biggest first, several at once; ``arrived`` collects each verified digest."""
    order = sorted(todo, key=lambda d: -d.size)
    with progress(total=sum(d.size for d in order), desc=f"pull {label}") as bar:

        def one(d: Descriptor, on_bytes: Callable[[int], None]) -> None:
            receive(local, transport.get_blob(repo, d, on_bytes), expected=d.digest, what=d.filepath or "config")
            arrived.append(d.digest)

        in_parallel(one, order, bar.update)


def _local_tags(local: Store, name: str, manifest: Manifest, tag: str | None, origin: str) -> list[str]:
    """The local tags a pulled version gets: its version number and the tag asked for, which moves here."""
    version = BundleInfo.from_manifest(manifest, name=name).version
    wanted = [str(version)] if version is not None else []
    if tag and not tag.isdigit():
        wanted.append(tag)
    existing = {t: d for (n, d), ts in local.refs().items() if n == name for t in ts}
    tags = arrival_tags(name, manifest.digest, wanted, existing, origin=origin, hint="pull it under another name with as_name=NAME", move_named=True)
    return tags or ["latest"]


def _trust_required() -> bool:
    trust = load_config().get("trust", {})
    return bool(isinstance(trust, dict) and trust.get("require_signature"))
