"""The local store: an OCI image layout directory (DESIGN.md §2).

    store/
      oci-layout                 {"imageLayoutVersion": "1.0.0"}
      index.json                 one entry per tag: ref.name = "NAME:TAG"
      blobs/sha256/<hex>         content-addressed blobs

Writes are atomic (temp file, fsync, rename) and the index is only changed
under a file lock, so a killed process leaves no half bundle (at worst an
unreferenced blob that ``gc`` removes) and concurrent writers lose nothing.
The same class serves a ``file://`` remote: it is the same layout.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import functools
import hashlib
import json
import mmap
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from . import paths
from ._files import atomic_write
from .bundle import mediatypes as mt
from .bundle.card import Card, default_body
from .bundle.draft import Draft
from .bundle.info import BundleInfo
from .bundle.manifest import (
    Descriptor,
    Manifest,
    build_config,
    build_manifest,
    human_param_size,
    layer,
    parse_manifest,
    sha256_digest,
)
from .bundle.refs import DIGEST_RE, Reference, parse, validate_name, validate_tag
from .errors import BundleNotFound, IntegrityError, InvalidReference, ModelPackError, StoreError

_CHUNK = 8 << 20
NAME_KEY = "dev.nbmodelpack.name"
_VERSIONS_KEY = "dev.nbmodelpack.versions"
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# A commit hook (signing): gets a new version's layers, returns one more layer.
Signer = Callable[[list[Descriptor]], Descriptor]

# Layer codecs: a media-type suffix (``+age``, ``+zstd``) -> a function that unwraps one
# layer's bytes. Transforms register theirs (crypto registers ``+age``), so the store
# never imports them. Arguments: the opened bundle, the layer, its stored bytes, the identity.
Codec = Callable[["StoredBundle", Descriptor, bytes, Any], bytes]
_CODECS: dict[str, Codec] = {}


def register_codec(suffix: str, decode: Codec) -> None:
    """Let the store unwrap layers whose media type ends with ``suffix``.

    Example:
        >>> register_codec("+rot13", lambda bundle, desc, data, identity: data)
    """
    _CODECS[suffix] = decode


def _codec(suffix: str) -> Codec:
    try:
        return _CODECS[suffix]
    except KeyError:
        # ``nbmodelpack.api`` imports crypto, which registers ``+age``: reached only below the API.
        raise StoreError(f"no codec for {suffix} layers", hint="import nbmodelpack.crypto first") from None


def _inflate_zstd(bundle: StoredBundle, desc: Descriptor, data: bytes, identity: Any) -> bytes:
    import zstandard

    try:
        return zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{desc.filepath} is not valid zstd data") from exc
# Like git, blobs are not fsynced by default (a killed process still leaves no half
# bundle: the rename and the index update come after the write). index.json always is.
# NBMODELPACK_FSYNC=1 also syncs blobs, for power-loss safety at the cost of disk speed.
_FSYNC_BLOBS = os.environ.get("NBMODELPACK_FSYNC", "") not in ("", "0")


@dataclass(frozen=True)
class FsckProblem:
    """One blob that is missing or does not match its digest."""

    digest: str
    filepath: str
    problem: str

    def __str__(self) -> str:
        return f"{self.filepath or self.digest}: {self.problem} ({self.digest[:19]}…)"


def _store_error(exc: OSError, what: str) -> StoreError:
    if exc.errno in _DISK_ERRNOS:
        return StoreError(f"disk full while writing {what}; nothing was saved", hint="free some space and retry")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"cannot write {what}: {exc.strerror}", hint="check NBMODELPACK_HOME permissions")
    return StoreError(f"cannot write {what}: {exc.strerror or exc}")


def _hash_and_write(chunks: Iterable[bytes | memoryview], out: IO[bytes]) -> tuple[str, int]:
    """Write chunks while hashing them on a second thread (hashlib drops the GIL)."""
    h = hashlib.sha256()
    size = 0
    pending: threading.Thread | None = None
    for chunk in chunks:
        if pending is not None:
            pending.join()
        if len(chunk) >= (1 << 20):
            pending = threading.Thread(target=h.update, args=(chunk,))
            pending.start()
        else:
            h.update(chunk)
            pending = None
        out.write(chunk)
        size += len(chunk)
    if pending is not None:
        pending.join()
    return "sha256:" + h.hexdigest(), size


def _split(data: bytes | memoryview) -> Iterator[memoryview]:
    view = memoryview(data)
    step = 64 << 20
    for start in range(0, len(view), step):
        yield view[start : start + step]


def _hash_file(path: Path) -> str:
    """sha256 of a file through a read-only map (no copy; hashlib drops the GIL)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                h.update(view)
    return "sha256:" + h.hexdigest()


def _corrupted(name: str, digest: str) -> IntegrityError:
    return IntegrityError(
        f"{name} is corrupted (content does not match {digest[:19]}…)",
        hint="re-pull or re-pack it; `modelpack fsck` lists every damaged blob",
    )


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """An OCI image layout holding bundles.

    Example:
        >>> import tempfile
        >>> store = Store(tempfile.mkdtemp())
        >>> store.list()
        []
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self.root = Path(root) if root is not None else paths.store_dir()
        self._blobs = self.root / "blobs" / "sha256"
        if create:
            self._init_layout()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---- layout ---------------------------------------------------------------------------
    def _init_layout(self) -> None:
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            layout = self.root / "oci-layout"
            if not layout.exists():
                self._atomic_write(layout, b'{"imageLayoutVersion":"1.0.0"}')
            if not (self.root / "index.json").exists():
                self._write_index([], {})
        except OSError as exc:
            raise _store_error(exc, f"the store at {self.root}") from exc

    @contextlib.contextmanager
    def lock(self, timeout: float = 120.0) -> Iterator[None]:
        """Hold the store's index lock (inter-process)."""
        try:
            with FileLock(str(self.root / ".lock"), timeout=timeout):
                yield
        except Timeout as exc:
            raise StoreError(
                "the store is locked by another process", hint=f"retry, or remove {self.root / '.lock'} if none runs"
            ) from exc

    def _atomic_write(self, path: Path, data: bytes) -> None:
        atomic_write(path, data)

    # ---- blobs ----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if not DIGEST_RE.match(digest):
            raise InvalidReference(repr(digest), hint="a digest is sha256: followed by 64 hex digits")
        return self._blobs / digest.split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def put_bytes(self, data: bytes | memoryview, *, what: str = "a blob") -> tuple[str, int]:
        """Store bytes as a blob; return ``(digest, size)``. Idempotent."""
        return self.put_chunks(_split(data), what=what)

    def put_chunks(
        self, chunks: Iterable[bytes | memoryview], *, expected: str | None = None, what: str = "a blob"
    ) -> tuple[str, int]:
        """Stream chunks into a blob, hashing as they go; refuse if ``expected`` does not match."""
        tmp = self._blobs / f".tmp-{uuid.uuid4().hex}"
        try:
            try:
                with open(tmp, "wb") as f:
                    digest, size = _hash_and_write(chunks, f)
                    if _FSYNC_BLOBS:
                        f.flush()
                        os.fsync(f.fileno())
            except OSError as exc:
                raise _store_error(exc, what) from exc
            if expected is not None and digest != expected:
                raise IntegrityError(f"{what} has digest {digest[:19]}…, expected {expected[:19]}…")
            self._settle(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest, size

    def _settle(self, tmp: Path, digest: str) -> None:
        # Same content is already there: keep it (replacing a large file costs a truncate).
        final = self.blob_path(digest)
        if not final.exists():
            os.replace(tmp, final)

    def put_written(self, filepath: str, media_type: str, write: Callable[[Path], None]) -> Descriptor:
        """Let ``write(path)`` produce a layer file in place (e.g. ``safetensors.save_file``), then hash it.

        Saves building the whole file in memory first: for large weights this is
        the fast path (one write, one hashing read from the page cache).
        """
        tmp = self._blobs / f".tmp-{uuid.uuid4().hex}"
        try:
            try:
                write(tmp)
                if _FSYNC_BLOBS:
                    with open(tmp, "rb") as f:
                        os.fsync(f.fileno())
            except OSError as exc:
                raise _store_error(exc, filepath) from exc
            except Exception as exc:
                # Writers in other languages (safetensors is Rust) report OS errors as text.
                code = re.search(r"(?:os error|code:) (\d+)", str(exc))
                if code and int(code.group(1)) in _DISK_ERRNOS:
                    raise _store_error(OSError(int(code.group(1)), os.strerror(int(code.group(1)))), filepath) from exc
                raise
            size = tmp.stat().st_size
            digest = _hash_file(tmp)
            self._settle(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return layer(filepath, media_type, digest, size)

    def put_layer(self, filepath: str, media_type: str, data: bytes | memoryview) -> Descriptor:
        """Store bytes as a layer blob and return its descriptor."""
        digest, size = self.put_bytes(data, what=filepath)
        return layer(filepath, media_type, digest, size)

    def read_blob(self, digest: str, *, what: str = "") -> bytes:
        """Read a blob and check it against its digest (the error names ``what``)."""
        path = self.blob_path(digest)
        name = what or digest
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as exc:
            raise IntegrityError(f"{name} is missing from the store", hint="run `modelpack fsck`") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {name}: {exc.strerror}") from exc
        if sha256_digest(data) != digest:
            raise _corrupted(name, digest)
        return data

    def verify_in_background(self, digest: str, *, what: str = "") -> Callable[[], None]:
        """Start hashing a blob file on a second thread; the returned ``check()`` waits and raises on a mismatch.

        Lets a caller map and parse a large blob while it is verified (hashlib
        releases the GIL); nothing may be handed to the user before ``check()``.
        """
        result: list[str | BaseException] = []

        def work() -> None:
            try:
                result.append(_hash_file(self.blob_path(digest)))
            except OSError as exc:
                result.append(exc)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()

        def check() -> None:
            worker.join()
            if isinstance(result[0], BaseException):
                raise IntegrityError(f"{what or digest} cannot be read: {result[0]}", hint="run `modelpack fsck`")
            if result[0] != digest:
                raise _corrupted(what or digest, digest)

        return check

    def iter_blob(self, digest: str, chunk: int = _CHUNK) -> Iterator[bytes]:
        """Yield a blob's raw bytes (unverified: callers that stream verify as they go)."""
        with open(self.blob_path(digest), "rb") as f:
            while block := f.read(chunk):
                yield block

    # ---- index ----------------------------------------------------------------------------
    def _read_index_doc(self) -> dict[str, Any]:
        path = self.root / "index.json"
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise StoreError(f"{self.root} is not a bundle store (no index.json)") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path} is not valid JSON", hint="restore it from a backup or run `modelpack fsck`") from exc
        if not isinstance(doc, dict):
            raise StoreError(f"{path} is not an OCI index")
        return doc

    def _entries(self) -> list[dict[str, Any]]:
        return list(self._read_index_doc().get("manifests", []))

    def _write_index(self, entries: list[dict[str, Any]], annotations: dict[str, str]) -> None:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.INDEX, "manifests": entries}
        if annotations:
            doc["annotations"] = annotations
        try:
            self._atomic_write(self.root / "index.json", json.dumps(doc, indent=1).encode())
        except OSError as exc:
            raise _store_error(exc, "index.json") from exc

    @staticmethod
    def _entry_ref(entry: dict[str, Any]) -> tuple[str, str] | None:
        ref_name = (entry.get("annotations") or {}).get(mt.REF_NAME, "")
        if ":" not in ref_name:
            return None
        name, tag = ref_name.rsplit(":", 1)
        return name, tag

    @staticmethod
    def _entry(name: str, tag: str, digest: str, size: int) -> dict[str, Any]:
        return {
            "mediaType": mt.MANIFEST,
            "artifactType": mt.ARTIFACT,
            "digest": digest,
            "size": size,
            "annotations": {mt.REF_NAME: f"{name}:{tag}", NAME_KEY: name},
        }

    # ---- manifests ------------------------------------------------------------------------
    def manifest(self, digest: str) -> Manifest:
        """Read and verify one manifest."""
        return parse_manifest(self.read_blob(digest, what="manifest"), digest)

    def resolve(self, ref: str | Reference) -> tuple[str, str]:
        """Find ``(name, digest)`` for a local reference."""
        r = parse(ref) if isinstance(ref, str) else ref
        if not r.is_local:
            raise InvalidReference(str(r), hint="that names a remote; `modelpack pull` it first")
        entries = self._entries()
        if r.digest:
            for entry in entries:
                ref_name = self._entry_ref(entry)
                if entry.get("digest") == r.digest and ref_name and ref_name[0] == r.name:
                    return r.name, r.digest
            raise BundleNotFound(str(r), hint="run `modelpack ls` to see what exists")
        for entry in entries:
            if self._entry_ref(entry) == (r.name, r.tag):
                return r.name, str(entry["digest"])
        known = sorted({n for e in entries if (ref_name := self._entry_ref(e)) for n in [ref_name[0]]})
        hint = f"versions of {r.name}: `modelpack ls {r.name}`" if r.name in known else "run `modelpack ls` to see what exists"
        raise BundleNotFound(str(r), hint=hint)

    def tags_of(self, name: str, digest: str) -> list[str]:
        return [
            t for e in self._entries() if e.get("digest") == digest and (nt := self._entry_ref(e)) and nt[0] == name
            for t in [nt[1]]
        ]

    def open(self, ref: str | Reference) -> StoredBundle:
        """Open a bundle version for reading."""
        name, digest = self.resolve(ref)
        return StoredBundle(self, name, self.manifest(digest))

    def info(self, ref: str | Reference) -> BundleInfo:
        """The :class:`BundleInfo` of one version."""
        return self.open(ref).info

    def list(self, name: str | None = None) -> list[BundleInfo]:
        """Every version (newest first per name), tags merged; reads manifests only."""
        groups: dict[tuple[str, str], list[str]] = {}
        for entry in self._entries():
            nt = self._entry_ref(entry)
            if nt is None or (name is not None and nt[0] != name):
                continue
            groups.setdefault((nt[0], str(entry["digest"])), []).append(nt[1])
        published = self.published()
        out = []
        for (bundle_name, digest), tags in groups.items():
            try:
                manifest = self.manifest(digest)
            except ModelPackError:
                continue  # fsck reports it; a listing shows what can be read
            info = BundleInfo.from_manifest(manifest, name=bundle_name, tags=tags)
            info.published = published.get(digest, [])
            out.append(info)
        out.sort(key=lambda i: (i.name, -(i.version or 0), i.digest))
        return out

    def refs(self) -> dict[tuple[str, str], builtins.list[str]]:
        """``(name, manifest digest) -> tags``, from ``index.json`` alone (no manifest is read).

        Example:
            >>> import tempfile
            >>> Store(tempfile.mkdtemp()).refs()
            {}
        """
        out: dict[tuple[str, str], builtins.list[str]] = {}
        for entry in self._entries():
            nt = self._entry_ref(entry)
            if nt is not None:
                out.setdefault((nt[0], str(entry["digest"])), []).append(nt[1])
        return out

    def names(self) -> builtins.list[str]:
        return sorted({nt[0] for e in self._entries() if (nt := self._entry_ref(e))})

    # ---- writing versions -----------------------------------------------------------------
    def commit(
        self,
        draft: Draft,
        *,
        tags: Iterable[str] = (),
        signer: Signer | None = None,
    ) -> BundleInfo:
        """Number a draft (``:N`` and ``latest``), write its card, config and manifest, index it.

        All layer blobs must already be in the store. Only this step holds the lock.
        ``signer`` (signing) gets every layer of the new version, card included, and
        returns one more layer to add (it runs under the lock: the card names the version).
        """
        validate_name(draft.name)
        extra_tags = [validate_tag(t) for t in tags]
        for desc in draft.layers:
            if not self.has_blob(desc.digest):
                raise StoreError(f"layer {desc.filepath} is not in the store")
        with self.lock():
            doc = self._read_index_doc()
            entries = list(doc.get("manifests", []))
            annotations = dict(doc.get("annotations") or {})
            high = json.loads(annotations.get(_VERSIONS_KEY, "{}"))
            numbers = [int(t) for e in entries if (nt := self._entry_ref(e)) and nt[0] == draft.name and nt[1].isdigit() for t in [nt[1]]]
            version = max([int(high.get(draft.name, 0)), *numbers]) + 1
            manifest_raw = self._write_version(draft, version, signer)
            digest = sha256_digest(manifest_raw)
            moved = {"latest", *extra_tags}
            entries = [e for e in entries if self._entry_ref(e) not in {(draft.name, t) for t in moved}]
            for tag in [str(version), "latest", *extra_tags]:
                entries.append(self._entry(draft.name, tag, digest, len(manifest_raw)))
            high[draft.name] = version
            annotations[_VERSIONS_KEY] = json.dumps(high, sort_keys=True)
            self._write_index(entries, annotations)
        return self.info(f"{draft.name}@{digest}")

    def _write_version(
        self, draft: Draft, version: int, signer: Signer | None = None
    ) -> bytes:
        created = now_iso()
        layers = [d for d in draft.layers if d.filepath != "README.md"]
        arch = draft.architecture
        front: dict[str, Any] = {
            "name": draft.name,
            "version": version,
            "description": draft.description or None,
            "license": draft.license,
            "library_name": "pytorch",
            "tags": ["nbmodelpack", "modelpack", "safetensors"],
            "architecture": arch,
            "parameters": draft.parameters,
            "precision": draft.precision,
            "quantization": draft.quantization,
            "size_bytes": sum(d.size for d in layers),
            "metrics": draft.metrics or None,
            "datasets": draft.datasets or None,
            "lineage": [*draft.recipe.get("lineage", []), {k: v for k, v in draft.recipe.items() if k != "lineage"}],
            "created": created,
            **draft.card_extra,
        }
        front = {k: v for k, v in front.items() if v is not None}
        card_text = Card(front, draft.card_body or default_body(front)).render()
        layers.append(self.put_layer("README.md", mt.DOC, card_text.encode()))
        if signer is not None:
            layers.append(signer(list(layers)))
        config_raw = build_config(
            name=draft.name,
            version=str(version),
            created=created,
            diff_ids=[draft.diff_ids.get(d.digest, d.digest) for d in layers],
            precision=draft.precision,
            param_size=human_param_size(draft.parameters),
            architecture=str(arch.get("class", "")) or None,
            quantization=draft.quantization,
            description=draft.description or None,
            licenses=[draft.license] if draft.license else None,
        )
        config_digest, config_size = self.put_bytes(config_raw, what="config")
        summary = {
            "name": draft.name,
            "version": version,
            "parameters": draft.parameters,
            "precision": draft.precision,
            "quantization": draft.quantization or "",
            "architecture": arch,
            "metrics": draft.metrics,
            "description": draft.description,
            "license": draft.license,
            "datasets": draft.datasets,
            "card_extra": draft.card_extra,
            "diff_ids": {k: v for k, v in draft.diff_ids.items() if k != v},
        }
        annotations = {
            mt.CREATED: created,
            mt.TITLE: draft.name,
            mt.RECIPE: json.dumps(draft.recipe, sort_keys=True),
            mt.SUMMARY: json.dumps(summary, sort_keys=True),
        }
        raw = build_manifest(Descriptor(mt.CONFIG, config_digest, config_size), layers, annotations)
        self.put_bytes(raw, what="manifest")
        return raw

    def add_manifest(self, name: str, raw: bytes, tags: Iterable[str]) -> BundleInfo:
        """Index a manifest whose blobs are all present (pull, import). Tags move to it."""
        validate_name(name)
        tag_list = [validate_tag(t) for t in tags]
        manifest = parse_manifest(raw)
        for desc in (manifest.config, *manifest.layers):
            if not self.has_blob(desc.digest):
                raise StoreError(f"{desc.filepath or 'config'} of {name} is not in the store")
        digest, _ = self.put_bytes(raw, what="manifest")
        with self.lock():
            doc = self._read_index_doc()
            annotations = dict(doc.get("annotations") or {})
            drop = {(name, t) for t in tag_list}
            entries = [e for e in doc.get("manifests", []) if self._entry_ref(e) not in drop]
            entries += [self._entry(name, t, digest, len(raw)) for t in tag_list]
            high = json.loads(annotations.get(_VERSIONS_KEY, "{}"))
            numeric = [int(t) for t in tag_list if t.isdigit()]
            if numeric:
                high[name] = max([int(high.get(name, 0)), *numeric])
                annotations[_VERSIONS_KEY] = json.dumps(high, sort_keys=True)
            self._write_index(entries, annotations)
        return self.info(f"{name}@{digest}")

    def tag(self, ref: str, new_tag: str) -> BundleInfo:
        """Point ``NAME:new_tag`` at the version ``ref`` names (moving it if it exists)."""
        validate_tag(new_tag)
        if new_tag.isdigit():
            raise InvalidReference(repr(new_tag), hint="numeric tags are version numbers, given by the store")
        name, digest = self.resolve(ref)
        size = self.blob_path(digest).stat().st_size
        with self.lock():
            doc = self._read_index_doc()
            entries = [e for e in doc.get("manifests", []) if self._entry_ref(e) != (name, new_tag)]
            entries.append(self._entry(name, new_tag, digest, size))
            self._write_index(entries, dict(doc.get("annotations") or {}))
        return self.info(f"{name}@{digest}")

    def remove(self, ref: str) -> builtins.list[str]:
        """Remove a version: every tag of ``name`` that points at it. Blobs go at the next ``gc``.

        ``NAME`` alone (no tag) removes only the ``latest`` tag's version; to drop
        one tag and keep the version, re-tag instead.
        """
        name, digest = self.resolve(ref)
        with self.lock():
            doc = self._read_index_doc()
            entries = doc.get("manifests", [])
            gone = [e for e in entries if e.get("digest") == digest and (nt := self._entry_ref(e)) and nt[0] == name]
            kept = [e for e in entries if e not in gone]
            self._write_index(kept, dict(doc.get("annotations") or {}))
        return [f"{name}:{nt[1]}" for e in gone if (nt := self._entry_ref(e))]

    # ---- where versions were published (issue 6) ----------------------------------------
    # A side file, not an index annotation: the manifest (and so the digest) never changes.
    def published(self) -> dict[str, builtins.list[str]]:
        """``{manifest digest: ["REMOTE/NAME:VERSION", ...]}`` for every published version."""
        try:
            doc = json.loads((self.root / "published.json").read_bytes())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return {str(k): [str(x) for x in v] for k, v in doc.items() if isinstance(v, list)} if isinstance(doc, dict) else {}

    def record_published(self, digest: str, where: str) -> None:
        """Remember that the version ``digest`` is at ``where`` (a pullable reference)."""
        with self.lock():
            doc = self.published()
            places = doc.setdefault(digest, [])
            if where not in places:
                places.append(where)
                try:
                    self._atomic_write(self.root / "published.json", json.dumps(doc, indent=1, sort_keys=True).encode())
                except OSError as exc:
                    raise _store_error(exc, "published.json") from exc

    # ---- maintenance ----------------------------------------------------------------------
    def _referenced(self) -> set[str]:
        live: set[str] = set()
        for digest in {str(e["digest"]) for e in self._entries()}:
            live.add(digest)
            try:
                manifest = self.manifest(digest)
            except ModelPackError:
                continue
            live.add(manifest.config.digest)
            live.update(d.digest for d in manifest.layers)
        return live

    def gc(self, *, grace_seconds: float = 3600.0) -> tuple[int, int]:
        """Delete blobs no manifest references; return ``(count, bytes)``.

        Temp files and blobs newer than ``grace_seconds`` are kept: a pack in
        another process may be writing them before it commits.
        """
        with self.lock():
            live = self._referenced()
            count = freed = 0
            cutoff = time.time() - grace_seconds
            for path in self._blobs.iterdir():
                digest = "sha256:" + path.name
                if digest in live:
                    continue
                stat = path.stat()
                if stat.st_mtime > cutoff:
                    continue
                path.unlink()
                count += 1
                freed += stat.st_size
        return count, freed

    def fsck(self) -> builtins.list[FsckProblem]:
        """Re-hash every referenced blob; return the problems (empty when healthy)."""
        problems: list[FsckProblem] = []
        for digest in sorted({str(e["digest"]) for e in self._entries()}):
            try:
                manifest = self.manifest(digest)
            except ModelPackError as exc:
                problems.append(FsckProblem(digest, "manifest", str(exc)))
                continue
            for desc in (manifest.config, *manifest.layers):
                what = desc.filepath or "config"
                path = self.blob_path(desc.digest)
                if not path.exists():
                    problems.append(FsckProblem(desc.digest, what, "missing"))
                    continue
                if _hash_file(path) != desc.digest:
                    problems.append(FsckProblem(desc.digest, what, "corrupted (content does not match digest)"))
        unique = {(p.digest, p.filepath): p for p in problems}
        return list(unique.values())


class StoredBundle:
    """One bundle version in a store, for reading its files (each verified on read)."""

    def __init__(self, store: Store, name: str, manifest: Manifest) -> None:
        self.store = store
        self.name = name
        self.manifest = manifest

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @functools.cached_property
    def info(self) -> BundleInfo:
        """Name, tags and summary; read once per opened bundle (tags come from index.json)."""
        info = BundleInfo.from_manifest(
            self.manifest, name=self.name, tags=self.store.tags_of(self.name, self.digest)
        )
        info.published = self.store.published().get(self.digest, [])
        return info

    def descriptor(self, filepath: str) -> Descriptor:
        desc = self.manifest.layer(filepath)
        if desc is None:
            raise BundleNotFound(f"{filepath} in {self.name}@{self.digest[:19]}…")
        return desc

    def has(self, filepath: str) -> bool:
        return self.manifest.layer(filepath) is not None

    def read(self, filepath: str) -> bytes:
        """The stored (possibly compressed or encrypted) bytes of a layer, verified."""
        return self.store.read_blob(self.descriptor(filepath).digest, what=filepath)

    def plaintext(self, filepath: str, *, identity: Any = None, inflate: bool = True) -> bytes:
        """A layer's content with its wrappers removed: age-decrypted (in memory), then zstd-inflated.

        ``inflate=False`` stops after decryption (``decrypt`` keeps compressed layers compressed).
        """
        desc = self.descriptor(filepath)
        data = self.read(filepath)  # ciphertext and compressed bytes are verified before decoding
        media_type = desc.media_type
        if media_type.endswith(mt.AGE_SUFFIX):
            data = _codec(mt.AGE_SUFFIX)(self, desc, data, identity)
            media_type = media_type[: -len(mt.AGE_SUFFIX)]
        if inflate and media_type.endswith(mt.ZSTD_SUFFIX):
            data = _codec(mt.ZSTD_SUFFIX)(self, desc, data, identity)
        return data

    def read_json(self, filepath: str, *, identity: Any = None) -> Any:
        try:
            return json.loads(self.plaintext(filepath, identity=identity))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            from .errors import BundleFormatError

            raise BundleFormatError(f"{filepath} is not JSON") from exc

    def card(self) -> Card:
        return Card.parse(self.read("README.md").decode("utf-8", "replace"))

    def config(self) -> dict[str, Any]:
        data = self.store.read_blob(self.manifest.config.digest, what="config")
        return dict(json.loads(data))


_default_store: Store | None = None


def get_store(store: Store | str | None = None) -> Store:
    """The store to use: an explicit one, or the one under ``$NBMODELPACK_HOME``.

    Example:
        >>> get_store("/tmp/some-store").root.name
        'some-store'
    """
    if isinstance(store, Store):
        return store
    if store is not None:
        return Store(store)
    global _default_store
    if _default_store is None or _default_store.root != paths.store_dir():
        _default_store = Store(paths.store_dir())
    return _default_store


register_codec(mt.ZSTD_SUFFIX, _inflate_zstd)
