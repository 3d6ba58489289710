"""``index.json``: tags (``ref.name = NAME:TAG``), resolving references, version numbers.

Reading is lock-free (the file is replaced atomically); every change is made by
the :class:`~nbmodelpack.store.Store` under its lock with :meth:`Index.write`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._files import atomic_write, create_once, load_json_limited
from ..bundle import mediatypes as mt
from ..bundle.refs import Reference, parse
from ..errors import BundleFormatError, BundleNotFound, InvalidReference, StoreError, UsageError
from .blobs import read_regular, store_error

NAME_KEY = "dev.nbmodelpack.name"
# Index annotation: the highest version number each name ever had (numbers are never reused).
VERSIONS_KEY = "dev.nbmodelpack.versions"
# ~250 bytes per tag: 32 MiB holds over 100,000 tags, and bounds what a hostile layout's
# index (a file:// share, an import) can make us parse.
MAX_INDEX_BYTES = 32 << 20
Entry = dict[str, Any]


@dataclass
class IndexDoc:
    """The parsed index: its entries and its annotations."""

    entries: list[Entry]
    annotations: dict[str, str]

    def versions(self) -> dict[str, int]:
        try:
            high = json.loads(self.annotations.get(VERSIONS_KEY, "{}"))
        except json.JSONDecodeError:
            return {}
        return {str(k): int(v) for k, v in high.items() if isinstance(v, int)} if isinstance(high, dict) else {}

    def set_versions(self, high: dict[str, int]) -> None:
        self.annotations[VERSIONS_KEY] = json.dumps(high, sort_keys=True)

    def drop(self, name: str, tags: set[str]) -> None:
        """Remove the entries ``name:tag`` for each tag in ``tags``."""
        self.entries = [e for e in self.entries if (ref := entry_ref(e)) is None or ref[0] != name or ref[1] not in tags]

    def point(self, name: str, tags: list[str], digest: str, size: int) -> None:
        """Make ``name:tag`` name ``digest`` for each tag (moving tags that exist)."""
        unique = list(dict.fromkeys(tags))
        self.drop(name, set(unique))
        self.entries += [new_entry(name, tag, digest, size) for tag in unique]


def entry_ref(entry: Entry) -> tuple[str, str] | None:
    """``(name, tag)`` of an index entry, or None for an entry without a ``NAME:TAG`` ref."""
    annotations = entry.get("annotations") if isinstance(entry, dict) else None
    ref_name = annotations.get(mt.REF_NAME, "") if isinstance(annotations, dict) else ""
    if not isinstance(ref_name, str) or ":" not in ref_name or not isinstance(entry.get("digest"), str):
        return None
    name, tag = ref_name.rsplit(":", 1)
    return name, tag


def new_entry(name: str, tag: str, digest: str, size: int) -> Entry:
    return {
        "mediaType": mt.MANIFEST,
        "artifactType": mt.ARTIFACT,
        "digest": digest,
        "size": size,
        "annotations": {mt.REF_NAME: f"{name}:{tag}", NAME_KEY: name},
    }


class Index:
    """The ``index.json`` of one store directory."""

    def __init__(self, root: Path) -> None:
        self.path = root / "index.json"
        self.root = root

    def identity(self) -> tuple[int, int, int, int] | None:
        """What changes whenever the file is replaced (inode, size, mtime, ctime), or None if absent."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def read(self) -> IndexDoc:
        try:
            raw = read_regular(self.path, MAX_INDEX_BYTES)  # a shared layout's index may be a link or a device
        except FileNotFoundError as exc:
            raise StoreError(f"{self.root} is not a bundle store (no index.json)") from exc
        except ValueError as exc:
            raise StoreError(f"{self.path} is larger than {MAX_INDEX_BYTES >> 20} MiB", hint="the layout is damaged or hostile; nothing was read") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}", hint="index.json must be a regular file") from exc
        try:
            doc = load_json_limited(raw, what=str(self.path), max_bytes=MAX_INDEX_BYTES)
        except BundleFormatError as exc:
            raise StoreError(f"{self.path} is not valid JSON", hint="restore it from a backup or run `modelpack fsck`") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
            raise StoreError(f"{self.path} is not an OCI index")
        annotations = doc.get("annotations") or {}
        entries = [e for e in doc.get("manifests", []) if isinstance(e, dict)]
        return IndexDoc(entries, {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {})

    def write(self, doc: IndexDoc) -> None:
        try:
            atomic_write(self.path, _encode(doc))
        except OSError as exc:
            raise store_error(exc, "index.json") from exc

    def create(self) -> None:
        """Write an empty index unless one exists (never replaces one another process just wrote)."""
        try:
            create_once(self.path, _encode(IndexDoc([], {})))
        except OSError as exc:
            raise store_error(exc, "index.json") from exc

    def refs(self) -> dict[tuple[str, str], list[str]]:
        """``(name, manifest digest) -> tags``."""
        out: dict[tuple[str, str], list[str]] = {}
        for entry in self.read().entries:
            nt = entry_ref(entry)
            if nt is not None:
                out.setdefault((nt[0], str(entry["digest"])), []).append(nt[1])
        return out

    def resolve(self, ref: str | Reference) -> tuple[str, str]:
        """Find ``(name, digest)`` for a local reference."""
        r = as_reference(ref)
        if not r.is_local:
            raise InvalidReference(str(r), hint="that names a remote; `modelpack pull` it first")
        entries = [(nt, str(e["digest"])) for e in self.read().entries if (nt := entry_ref(e))]
        if r.digest:
            if any(digest == r.digest and nt[0] == r.name for nt, digest in entries):
                return r.name, r.digest
            raise BundleNotFound(str(r), hint="run `modelpack ls` to see what exists")
        for nt, digest in entries:
            if nt == (r.name, r.tag):
                return r.name, digest
        known = {nt[0] for nt, _ in entries}
        hint = f"versions of {r.name}: `modelpack ls {r.name}`" if r.name in known else "run `modelpack ls` to see what exists"
        raise BundleNotFound(str(r), hint=hint)


def as_reference(ref: object) -> Reference:
    """A :class:`Reference` from a reference or its text; anything else is one ``InvalidReference`` line.

    Example:
        >>> as_reference(5)
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.InvalidReference: bad reference: 5 (a reference is text like NAME, NAME:VERSION or NAME@sha256:…)
    """
    if isinstance(ref, Reference):
        return ref
    if not isinstance(ref, str):
        raise InvalidReference(f"{ref!r:.60}", hint="a reference is text like NAME, NAME:VERSION or NAME@sha256:…")
    return parse(ref)


def _encode(doc: IndexDoc) -> bytes:
    out: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.INDEX, "manifests": doc.entries}
    if doc.annotations:
        out["annotations"] = doc.annotations
    return json.dumps(out, indent=1).encode()


def arrival_tags(name: str, digest: str, wanted: Iterable[str], existing: Mapping[str, str], *, origin: str, hint: str, move_named: bool) -> list[str]:
    """The local tags of a version arriving from elsewhere (pull, import): one rule for both.

    A version number the store already gives another bundle is refused (nothing
    replaces a version); a named tag moves to the arrival only with ``move_named`` (an
    explicit ``pull REMOTE/NAME:TAG``), else it stays where it is; ``latest`` is added
    where the name has none. ``existing`` maps this name's tags to their digests.

    Example:
        >>> arrival_tags("m", "sha256:b", ["2", "prod"], {"1": "sha256:a", "prod": "sha256:a", "latest": "sha256:a"}, origin="x", hint="", move_named=False)
        ['2']
    """
    tags = list(dict.fromkeys(wanted))
    for tag in tags:
        if tag.isdigit() and existing.get(tag, digest) != digest:
            raise UsageError(f"local {name}:{tag} is a different bundle than {origin}", hint=hint)
    if not move_named:
        tags = [t for t in tags if existing.get(t, digest) == digest]
    if "latest" not in existing and "latest" not in tags:
        tags.append("latest")
    return tags
