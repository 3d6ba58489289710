"""The local store: an OCI image layout directory.

    store/
      oci-layout                 {"imageLayoutVersion": "1.0.0"}
      index.json                 one entry per tag: ref.name = "NAME:TAG"      (index.py)
      blobs/sha256/<hex>         content-addressed blobs                       (blobs.py)
      staging/<kind>-<uuid>/     work in progress (pull, import); gc removes stale ones
      .verified/<hex>            "hashed by us, unchanged since" records        (records.py)

Writes are atomic (temp file, fsync, rename) and the index is only changed
under a file lock, so a killed process leaves no half bundle (at worst an
unreferenced blob that ``gc`` removes) and concurrent writers lose nothing.
The same class serves a ``file://`` remote: it is the same layout.
:class:`Store` is the facade; composing a version (compose.py), reading one
(opened.py) and maintenance (maintenance.py) live beside it.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from filelock import FileLock, Timeout

from .. import paths
from .._files import create_once
from ..bundle.draft import Draft
from ..bundle.info import BundleInfo, listing_order, tag_order
from ..bundle.manifest import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    check_filepaths,
    layer,
    parse_manifest,
    sha256_digest,
)
from ..bundle.refs import Reference, validate_name, validate_tag
from ..config import trusted_modules
from ..errors import InvalidReference, ModelPackError, StoreError, UsageError
from . import maintenance
from .blobs import CHUNK, Blobs, split, store_error
from .compose import Signer, now_iso, write_version
from .index import NAME_KEY, Entry, Index, entry_ref
from .maintenance import FsckProblem
from .opened import Codec, StoredBundle, StreamCodec, register_codec
from .records import Records

__all__ = [
    "NAME_KEY",
    "Codec",
    "FsckProblem",
    "Signer",
    "Store",
    "StoredBundle",
    "StreamCodec",
    "get_store",
    "now_iso",
    "register_codec",
]

# (store root, name, manifest digest) -> BundleInfo without tags. A manifest never changes
# (its digest is its name), so a listing reads only manifests it has not seen yet.
_INFOS: dict[tuple[str, ...], BundleInfo] = {}
_INFOS_MAX = 50_000
# store root -> (index.json identity, its refs): skips re-parsing an unchanged index.
_REFS: dict[str, tuple[tuple[int, int, int, int], dict[tuple[str, str], list[str]]]] = {}
_CACHE_LOCK = threading.Lock()
# An index replaced within this many seconds may share its identity with the next
# one (same inode reused, same size, same clock tick): such refs are not cached.
_RACY_SECONDS = 2.0


class Store:
    """An OCI image layout holding bundles.

    ``records`` (default: ``create``) keeps verification records, so that reads skip
    re-hashing blobs hashed before and unchanged since; a layout opened only to read
    what someone else wrote (``create=False``) neither writes nor trusts them.

    Example:
        >>> import tempfile
        >>> store = Store(tempfile.mkdtemp())
        >>> store.list()
        []
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, create: bool = True, records: bool | None = None) -> None:
        self.root = Path(root) if root is not None else paths.store_dir()
        self.blob_dir = self.root / "blobs" / "sha256"
        keep_records = create if records is None else records
        self.blobs = Blobs(self.blob_dir, Records(self.root) if keep_records else None)
        self.index = Index(self.root)
        if create:
            self._init_layout()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---- layout ---------------------------------------------------------------------------
    def _init_layout(self) -> None:
        try:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            layout = self.root / "oci-layout"
            if not layout.exists():
                create_once(layout, b'{"imageLayoutVersion":"1.0.0"}')
            if not self.index.path.exists():
                self.index.create()  # another process may create (and commit to) it meanwhile
        except OSError as exc:
            raise store_error(exc, f"the store at {self.root}") from exc

    @contextlib.contextmanager
    def lock(self, timeout: float = 120.0) -> Iterator[None]:
        """Hold the store's index lock (inter-process)."""
        path = self.root / ".lock"
        if path.is_symlink():  # a hostile layout must not make us open (and create) a file elsewhere
            raise StoreError(f"{path} is a symbolic link", hint="remove it; the store's lock is a plain file")
        try:
            with FileLock(str(path), timeout=timeout):
                yield
        except Timeout as exc:
            raise StoreError("the store is locked by another process", hint=f"retry, or remove {path} if none runs") from exc

    def new_staging(self, kind: str) -> Path:
        """A fresh directory ``<root>/staging/<kind>-<uuid>`` for work that may become store content.

        ``gc`` removes staging directories untouched for its grace period (a killed pull's leftovers).

        Example:
            >>> import tempfile
            >>> Store(tempfile.mkdtemp()).new_staging("pull").name.startswith("pull-")
            True
        """
        if not kind.isalpha() or not kind.islower():
            raise UsageError(f"staging kind {kind!r:.40} is not a lowercase word")
        path = self.root / "staging" / f"{kind}-{uuid.uuid4().hex}"
        for _ in range(3):  # a finishing pull may remove the empty parent between our two mkdirs
            try:
                path.mkdir(parents=True)
                return path
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise store_error(exc, f"a staging directory in {self.root}") from exc
        raise StoreError(f"cannot create a staging directory in {self.root}", hint="try again")

    @contextlib.contextmanager
    def staging(self, kind: str) -> Iterator[Path]:
        """A :meth:`new_staging` directory that is removed when the block ends (however it ends)."""
        path = self.new_staging(kind)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    # ---- blobs ----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs.path(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blobs.has(digest)

    def put_bytes(self, data: bytes | memoryview, *, what: str = "a blob") -> tuple[str, int]:
        """Store bytes as a blob; return ``(digest, size)``. Idempotent."""
        return self.blobs.write_chunks(split(data), what=what)

    def put_chunks(
        self, chunks: Iterable[bytes | memoryview], *, expected: str | None = None, what: str = "a blob"
    ) -> tuple[str, int]:
        """Stream chunks into a blob, hashing as they go; refuse if ``expected`` does not match."""
        return self.blobs.write_chunks(chunks, expected=expected, what=what)

    def put_written(self, filepath: str, media_type: str, write: Callable[[Path], None], *, encodings: tuple[str, ...] = ()) -> Descriptor:
        """Let ``write(path)`` produce a layer file (e.g. ``safetensors.save_file``); return its descriptor.

        ``encodings``: how the written bytes wrap the file (``("zstd",)``, ``("age",)``), innermost first.
        """
        digest, size = self.blobs.write_with(write, what=filepath)
        return layer(filepath, media_type, digest, size, encodings)

    def put_stream(self, filepath: str, media_type: str, chunks: Iterable[bytes | memoryview]) -> Descriptor:
        """Store a layer streamed as chunks, hashed on a second thread as they are written; return its descriptor."""
        digest, size = self.blobs.write_chunks(chunks, what=filepath)
        return layer(filepath, media_type, digest, size)

    def put_layer(self, filepath: str, media_type: str, data: bytes | memoryview, *, encodings: tuple[str, ...] = ()) -> Descriptor:
        """Store bytes as a layer blob and return its descriptor (``encodings`` as in :meth:`put_written`)."""
        digest, size = self.put_bytes(data, what=filepath)
        return layer(filepath, media_type, digest, size, encodings)

    def read_blob(self, digest: str, *, what: str = "", limit: int | None = None, verify: bool = False) -> bytes:
        """Read a blob and check it against its digest (the error names ``what``).

        A large blob whose verification record still matches is not re-hashed, unless ``verify``.
        """
        return self.blobs.read(digest, what=what, limit=limit, verify=verify)

    def check_blob(self, digest: str, *, what: str = "", verify: bool = False) -> Callable[[], None]:
        """Verify a blob before use: no hash while its record matches (unless ``verify``), else one on a second thread.

        The returned ``check()`` raises :class:`~nbmodelpack.errors.IntegrityError` on a
        mismatch; nothing read from the blob may be handed out before it returns.

        Example:
            >>> check = store.check_blob(digest, what="model.safetensors")  # doctest: +SKIP
            >>> check()  # doctest: +SKIP
        """
        return self.blobs.check_in_background(digest, what=what, verify=verify)

    def blob_verified(self, digest: str) -> bool:
        """Whether this user hashed the blob before and its file has not changed since (no hashing here)."""
        return self.blobs.is_recorded(digest)

    @contextlib.contextmanager
    def reading_blob(self, digest: str, *, what: str = "", verify: bool = False) -> Iterator[IO[bytes]]:
        """A blob opened for reading (no links, FIFOs or devices) while :meth:`check_blob` verifies it.

        The check ends the block: a damaged blob raises :class:`~nbmodelpack.errors.IntegrityError`,
        also in place of an error its damage caused inside the block; nothing derived from
        the bytes may be handed out before the block has ended.

        Example:
            >>> with store.reading_blob(digest, what="model.safetensors") as f:  # doctest: +SKIP
            ...     header = f.read(8)
        """
        check = self.check_blob(digest, what=what, verify=verify)
        try:
            with self.blobs._open(digest, what) as f:
                yield f
        except Exception:
            check()  # a damaged blob is reported as such, not as the error it caused
            raise
        check()

    def put_streamed(
        self, filepath: str, media_type: str, write: Callable[[IO[bytes]], None], *, encodings: tuple[str, ...] = ()
    ) -> Descriptor:
        """Let ``write(stream)`` push a layer's bytes (e.g. ``pyrage.encrypt_io``), hashed as written; return its descriptor.

        ``encodings`` as in :meth:`put_written`.
        """
        digest, size = self.blobs.write_streamed(write, what=filepath)
        return layer(filepath, media_type, digest, size, encodings)

    def iter_blob(self, digest: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """Yield a blob's raw bytes (unverified: callers that stream verify as they go)."""
        return self.blobs.iter(digest, chunk)

    # ---- reading the index ----------------------------------------------------------------
    def entries(self) -> builtins.list[Entry]:
        """The raw entries of ``index.json`` (for importing foreign layouts)."""
        return self.index.read().entries

    def manifest(self, digest: str) -> Manifest:
        """Read and verify one manifest (at most 4 MiB)."""
        return parse_manifest(self.read_blob(digest, what="manifest", limit=MAX_MANIFEST_BYTES), digest)

    def resolve(self, ref: str | Reference) -> tuple[str, str]:
        """Find ``(name, digest)`` for a local reference."""
        return self.index.resolve(ref)

    def tags_of(self, name: str, digest: str) -> builtins.list[str]:
        return self.refs().get((name, digest), [])

    def open(self, ref: str | Reference) -> StoredBundle:
        """Open a bundle version for reading."""
        name, digest = self.resolve(ref)
        return StoredBundle(self, name, self.manifest(digest))

    def info(self, ref: str | Reference) -> BundleInfo:
        """The :class:`BundleInfo` of one version."""
        return self.open(ref).info

    def refs(self) -> dict[tuple[str, str], builtins.list[str]]:
        """``(name, manifest digest) -> tags``, from ``index.json`` alone (no manifest is read).

        Example:
            >>> import tempfile
            >>> Store(tempfile.mkdtemp()).refs()
            {}
        """
        root = str(self.root)
        identity = self.index.identity()
        with _CACHE_LOCK:
            cached = _REFS.get(root)
        if identity is not None and cached is not None and cached[0] == identity:
            return {k: list(v) for k, v in cached[1].items()}
        refs = self.index.refs()
        if identity is not None and time.time() - identity[2] / 1e9 > _RACY_SECONDS:
            with _CACHE_LOCK:
                _REFS[root] = (identity, refs)
        return {k: list(v) for k, v in refs.items()}

    def list(self, name: str | None = None) -> builtins.list[BundleInfo]:
        """Every version (newest first per name), tags merged; reads each manifest once per process."""
        root = str(self.root)
        trusted = tuple(trusted_modules())
        out = []
        for (bundle_name, digest), tags in self.refs().items():
            if name is not None and bundle_name != name:
                continue
            key = (root, bundle_name, digest, *trusted)  # what listings say of the architecture follows [trust]
            with _CACHE_LOCK:
                info = _INFOS.get(key)
            if info is None:
                try:
                    info = StoredBundle(self, bundle_name, self.manifest(digest)).listed(trusted, [])
                except ModelPackError:
                    continue  # fsck reports it; a listing shows what can be read
                with _CACHE_LOCK:
                    if len(_INFOS) >= _INFOS_MAX:
                        _INFOS.clear()
                    _INFOS[key] = info
            out.append(dataclasses.replace(info, tags=sorted(tags, key=tag_order), published=[]))
        out.sort(key=listing_order)
        return out

    def names(self) -> builtins.list[str]:
        return sorted({name for name, _ in self.refs()})

    # ---- writing versions -----------------------------------------------------------------
    def _require_blobs(self, descs: Iterable[Descriptor], whose: str) -> None:
        # Called under the lock: gc (which holds it too) cannot delete them before the index names them.
        for desc in descs:
            if not self.has_blob(desc.digest):
                raise StoreError(f"{desc.filepath or 'config'} of {whose} is not in the store", hint="write it again")

    def commit(self, draft: Draft, *, tags: Iterable[str] = (), signer: Signer | None = None) -> BundleInfo:
        """Number a draft (``:N`` and ``latest``), write its card, config and manifest, index it.

        All layer blobs must already be in the store. Only this step holds the lock.
        ``signer`` (signing) gets every layer of the new version, card included, and
        returns one more layer to add (it runs under the lock: the card names the version).
        """
        validate_name(draft.name)
        extra_tags = [validate_tag(t) for t in tags]
        check_filepaths([d.filepath for d in draft.layers if d.filepath != "README.md"] + ["README.md"])
        with self.lock():
            self._require_blobs(draft.layers, draft.name)
            doc = self.index.read()
            high = doc.versions()
            numbers = [int(nt[1]) for e in doc.entries if (nt := entry_ref(e)) and nt[0] == draft.name and nt[1].isdigit()]
            version = max([high.get(draft.name, 0), *numbers]) + 1
            raw = write_version(self.blobs, draft, version, signer)
            digest = sha256_digest(raw)
            doc.point(draft.name, [str(version), "latest", *extra_tags], digest, len(raw))
            high[draft.name] = version
            doc.set_versions(high)
            self.index.write(doc)
        return self.info(f"{draft.name}@{digest}")

    def add_manifest(self, name: str, raw: bytes, tags: Iterable[str]) -> BundleInfo:
        """Index a manifest whose blobs are all present (pull, import). Tags move to it."""
        validate_name(name)
        tag_list = [validate_tag(t) for t in tags]
        manifest = parse_manifest(raw)
        with self.lock():
            self._require_blobs((manifest.config, *manifest.layers), name)
            digest, _ = self.put_bytes(raw, what="manifest")
            doc = self.index.read()
            doc.point(name, tag_list, digest, len(raw))
            numeric = [int(t) for t in tag_list if t.isdigit()]
            if numeric:
                high = doc.versions()
                high[name] = max([high.get(name, 0), *numeric])
                doc.set_versions(high)
            self.index.write(doc)
        return self.info(f"{name}@{digest}")

    def tag(self, ref: str, new_tag: str) -> BundleInfo:
        """Point ``NAME:new_tag`` at the version ``ref`` names (moving it if it exists)."""
        validate_tag(new_tag)
        if new_tag.isdigit():
            raise InvalidReference(repr(new_tag), hint="numeric tags are version numbers, given by the store")
        name, digest = self.resolve(ref)
        size = self.blob_path(digest).stat().st_size
        with self.lock():
            doc = self.index.read()
            doc.point(name, [new_tag], digest, size)
            self.index.write(doc)
        return self.info(f"{name}@{digest}")

    def remove(self, ref: str) -> builtins.list[str]:
        """Remove a version: every tag of ``name`` that points at it. Blobs go at the next ``gc``.

        ``NAME`` alone (no tag) removes only the ``latest`` tag's version; to drop
        one tag and keep the version, re-tag instead.
        """
        name, digest = self.resolve(ref)
        with self.lock():
            doc = self.index.read()
            gone = [nt[1] for e in doc.entries if e.get("digest") == digest and (nt := entry_ref(e)) and nt[0] == name]
            doc.drop(name, set(gone))
            self.index.write(doc)
        return [f"{name}:{tag}" for tag in gone]

    # ---- maintenance ----------------------------------------------------------------------
    def gc(self, *, grace_seconds: float = 3600.0) -> tuple[int, int]:
        """Delete unreferenced blobs and stale staging directories; return ``(count, bytes)`` of blobs.

        Blobs and staging directories newer than ``grace_seconds`` are kept: a pack
        or pull in another process may be writing them before it commits.
        """
        return maintenance.gc(self, grace_seconds=grace_seconds)

    def fsck(self) -> builtins.list[FsckProblem]:
        """Re-hash every referenced blob; return the problems (empty when healthy)."""
        return maintenance.fsck(self)


_default_store: Store | None = None


def get_store(store: Store | str | os.PathLike[str] | None = None) -> Store:
    """The store to use: an explicit one, or the one under ``$NBMODELPACK_HOME``.

    Example:
        >>> get_store("/tmp/some-store").root.name
        'some-store'
    """
    if isinstance(store, Store):
        return store
    if store is not None:
        if not isinstance(store, str | os.PathLike):
            raise UsageError(f"store={store!r:.60} is neither a Store nor a path")
        return Store(store)
    global _default_store
    if _default_store is None or _default_store.root != paths.store_dir():
        _default_store = Store(paths.store_dir())
    return _default_store
