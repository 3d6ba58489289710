"""Bundles in and out as OCI layouts: ``export`` (tar, directory or plain files) and ``import_``.

A tar to import is checked against the layout's allow-list before anything is
extracted, and unpacked into the store's staging area; an export is written
beside its target and renamed into place, so a refused or failed operation
leaves no partial output. :mod:`nbmodelpack.api` re-exports these.
"""

from __future__ import annotations

import json
import shutil
import stat
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from .bundle import mediatypes as mt
from .bundle.info import BundleInfo
from .bundle.manifest import Manifest, parse_manifest
from .bundle.refs import validate_name
from .errors import BundleFormatError, ModelPackError, StoreError, UsageError
from .signing import export_files
from .store import Store, get_store
from .store.blobs import read_regular
from .store.index import arrival_tags

ExportFormat = Literal["tar", "dir", "files"]


def ref_text(ref: object, verb: str) -> str:
    """``ref`` as a reference string; anything else is a one-line :class:`UsageError`.

    Example:
        >>> ref_text(5, "load")
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.UsageError: load needs a bundle reference such as 'mnist-mlp:1', got int (pass the reference as a string)
    """
    if isinstance(ref, str):
        return ref
    raise UsageError(f"{verb} needs a bundle reference such as 'mnist-mlp:1', got {type(ref).__name__}", hint="pass the reference as a string")


def export(ref: str, out: str | Path, *, format: ExportFormat = "tar", store: Store | str | None = None) -> Path:
    """Write one version to ``out``: an OCI layout as a ``.tar`` file or a directory, or its plain files.

    ``format="tar"`` writes one tar file, ``"dir"`` an OCI layout directory
    (added to the layout already there, if any), ``"files"`` the bundle's files
    by filepath, as stored (what ``model_signing verify`` checks), into a new or
    empty directory; model-spec tar layers (``.tar``, ``.tar+gzip``, ``.tar+zstd``,
    as modctl and KitOps write) are unpacked where their filepath says. The layout tags the manifest ``NAME:VERSION`` and
    ``VERSION``, so ``skopeo inspect oci-archive:FILE.tar:VERSION`` works. A
    refused or failed export leaves nothing at ``out``.

    Example:
        >>> nbmodelpack.export("mnist-mlp:1", "mnist.tar")  # doctest: +SKIP
        >>> nbmodelpack.export("mnist-mlp:1", "mnist-files", format="files")  # doctest: +SKIP
    """
    text_ref = ref_text(ref, "export")
    out_path = Path(out).expanduser()
    if format == "files":
        _refuse_occupied(out_path)
        return _write_beside(out_path, lambda tmp: _files(text_ref, tmp, store), what=f"the files of {text_ref}")
    source = get_store(store)
    bundle = source.open(text_ref)
    digests = [bundle.manifest.config.digest, *(d.digest for d in bundle.manifest.layers)]
    tags = list(bundle.info.tags)

    def fill(root: Path) -> Path:
        had_lock = (root / ".lock").exists()  # a live layout's lock belongs to its other writers
        layout = Store(root, records=False)  # an export is for others: records are per user
        for digest in digests:
            layout.put_chunks(source.iter_blob(digest), expected=digest)
        layout.add_manifest(bundle.name, bundle.manifest.raw, tags)
        if not had_lock:
            (layout.root / ".lock").unlink(missing_ok=True)  # an exported layout carries no lock file we made
        return root

    if format == "dir":
        if (out_path / "index.json").is_file():
            return fill(out_path)  # add to an existing layout (OCI layouts hold many manifests)
        _refuse_occupied(out_path)
        return _write_beside(out_path, fill, what=text_ref)
    if format != "tar":
        raise UsageError(f"format={format!r}: use 'tar', 'dir' or 'files'")
    if str(out).endswith("/") or out_path.is_dir():
        raise UsageError(f"{out_path} is a directory", hint='give a FILE.tar, or export with format="dir"')
    with tempfile.TemporaryDirectory(dir=out_path.parent if out_path.parent.exists() else None) as tmp:
        layout_root = fill(Path(tmp) / "layout")
        part = out_path.with_name(out_path.name + ".part")
        try:
            with tarfile.open(part, "w") as tar:
                for item in ("oci-layout", "index.json", "blobs"):
                    tar.add(layout_root / item, arcname=item, filter=_no_temp)
            part.replace(out_path)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise StoreError(f"cannot write {out_path}: {exc.strerror or exc}") from exc
    return out_path


def _refuse_occupied(target: Path) -> None:
    """An export directory must be new or empty: never mix a bundle into other files."""
    if target.exists() and not target.is_dir():
        raise ModelPackError(f"{target} is a file, not a directory", hint="export into a new or empty directory")
    if target.is_dir() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty", hint="export into a new or empty directory")


def _files(ref: str, tmp: Path, store: Store | str | None) -> None:
    """The files of ``ref`` into ``tmp``: as stored, with archive layers unpacked in place of their tar."""
    export_files(ref, tmp, store=store, unpack_archives=True)


def _write_beside(target: Path, write: Callable[[Path], Any], *, what: str) -> Path:
    """Run ``write(tmp)`` on a fresh directory beside ``target``, then rename it to ``target``.

    Whatever ``write`` refuses or fails on, nothing is left at ``target`` (nor
    any parent directory this call created).
    """
    missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        write(tmp)
        tmp.replace(target)  # rename(2) also replaces an empty directory, atomically
    except ValueError as exc:  # a filepath the file system cannot hold, e.g. a NUL byte
        raise BundleFormatError(f"cannot export {what}: {exc}", hint="the bundle names a file that cannot exist on disk") from exc
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc.strerror or exc}", hint="check the path and the free space") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for created in reversed(missing):
            if created.is_dir() and not target.exists():
                shutil.rmtree(created, ignore_errors=True)
    return target


def _no_temp(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if Path(info.name).name.startswith(".tmp-") else info


# An OCI layout tar holds these and nothing else: the allow-list import checks before extracting.
_LAYOUT_FILES = {"oci-layout", "index.json"}
_LAYOUT_DIRS = {"blobs", "blobs/sha256"}
_MAX_MEMBERS = 100_000  # a bundle has a handful of blobs; a layout of many bundles stays far below
_MAX_TAGS = 1000  # tags one imported manifest may bring along
_MAX_SMALL_FILE = 4 * 1024 * 1024  # index.json and oci-layout, capped as OCI distribution caps manifests


def _is_blob_name(name: str) -> bool:
    head, _, digest = name.rpartition("/")
    return head == "blobs/sha256" and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def layout_members(tar: tarfile.TarFile, *, free_bytes: int) -> list[tarfile.TarInfo]:
    """The members of an OCI layout tar, checked against the allow-list; anything else is refused.

    Only ``oci-layout``, ``index.json``, ``blobs/``, ``blobs/sha256/`` and
    regular files named by a sha256 digest pass (an optional leading ``./``
    aside): no links, devices, absolute paths, ``..``, duplicates, more than
    100,000 members, or more bytes than ``free_bytes``.

    Example:
        >>> import io
        >>> buf = io.BytesIO()
        >>> with tarfile.open(fileobj=buf, mode="w") as t:
        ...     t.addfile(tarfile.TarInfo("../evil"), io.BytesIO())
        >>> _ = buf.seek(0)
        >>> layout_members(tarfile.open(fileobj=buf), free_bytes=1 << 30)
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.UsageError: not an OCI layout: the tar holds '../evil' (an OCI layout holds oci-layout, index.json and blobs/sha256/ only)
    """
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    for member in tar:
        if len(members) >= _MAX_MEMBERS:
            raise UsageError(f"not an OCI layout: more than {_MAX_MEMBERS:,} members")
        name = member.name[2:] if member.name.startswith("./") else member.name
        name = name.rstrip("/") if member.isdir() else name
        if name in ("", "."):
            continue
        ok_file = member.isreg() and (name in _LAYOUT_FILES or _is_blob_name(name))
        ok_dir = member.isdir() and name in _LAYOUT_DIRS
        if not (ok_file or ok_dir) or name in seen:
            kind = "a second" if name in seen else "a link or device" if not (member.isreg() or member.isdir()) else ""
            what = f"{kind} {name!r}".strip() if kind else repr(name)
            raise UsageError(f"not an OCI layout: the tar holds {what}", hint="an OCI layout holds oci-layout, index.json and blobs/sha256/ only")
        if name in _LAYOUT_FILES and member.size > _MAX_SMALL_FILE:
            raise UsageError(f"not an OCI layout: {name} is {member.size:,} bytes (at most {_MAX_SMALL_FILE:,})")
        total += member.size
        if total > free_bytes:
            raise UsageError(f"the tar holds more than the {free_bytes:,} bytes free for the store", hint="free some space, or import an unpacked layout directory")
        seen.add(name)
        member.name = name
        members.append(member)
    if "index.json" not in seen:
        raise UsageError("not an OCI layout: the tar has no index.json")
    return members


def import_(path: str | Path, *, name: str | None = None, store: Store | str | None = None) -> list[BundleInfo]:
    """Import bundles from an OCI layout (``.tar`` or directory), verifying every blob.

    A tar is checked against the layout's allow-list (:func:`layout_members`)
    before anything is extracted, and unpacked into the store's staging area; a
    refused import adds no bundle.

    Example:
        >>> nbmodelpack.import_("mnist.tar")  # doctest: +SKIP
    """
    src = Path(path).expanduser()
    if not src.exists():
        raise UsageError(f"no such file: {src}")
    target = get_store(store)
    if src.is_dir():
        return _import_layout(src, target, name)
    staging = target.root / "staging" / f"import-{uuid.uuid4().hex}"
    try:
        try:
            # Plain tar only (export writes one): a compressed tar can declare a multi-GB long-name
            # or pax header that tarfile inflates into memory before any member check sees it.
            with tarfile.open(src, "r:") as tar:
                staging.mkdir(parents=True)
                members = layout_members(tar, free_bytes=shutil.disk_usage(staging).free)
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError) as exc:
            reason = "not a plain tar file (a compressed one must be decompressed first)" if isinstance(exc, tarfile.ReadError) else str(exc).splitlines()[0].rstrip(":")
            raise UsageError(f"{src.name} is not an OCI layout tar: {reason}", hint="export one with `modelpack export REF -o FILE.tar`") from exc
        except OSError as exc:
            raise StoreError(f"cannot import {src.name}: {exc.strerror or exc}") from exc
        return _import_layout(staging, target, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _index_entries(root: Path) -> list[dict[str, Any]]:
    """The manifest entries of the OCI layout at ``root`` (its ``index.json``, capped at 4 MiB)."""
    index = root / "index.json"
    try:
        doc = json.loads(read_regular(index, _MAX_SMALL_FILE))  # no links, FIFOs or devices; capped while read
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"not an OCI layout: {root.name}/index.json cannot be read ({type(exc).__name__})") from exc
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("digest"), str) for e in entries):
        raise UsageError("not an OCI layout: index.json has no list of manifests")
    return entries


def _import_layout(root: Path, target: Store, name: str | None) -> list[BundleInfo]:

    layout = Store(root, create=False)
    by_digest: dict[str, list[str]] = {}
    for entry in _index_entries(root):
        annotations = entry.get("annotations")
        ref_name = annotations.get("org.opencontainers.image.ref.name", "") if isinstance(annotations, dict) else ""
        by_digest.setdefault(str(entry["digest"]), []).append(str(ref_name))
    # Read and check every manifest first, then copy blobs, then add the versions:
    # a layout refused halfway adds no bundle (copied blobs go at the next gc).
    planned = []
    existing = {(n, t): d for (n, d), ts in target.refs().items() for t in ts}
    for digest, ref_names in by_digest.items():
        _check_blob(layout, digest, "manifest", most=_MAX_SMALL_FILE)
        raw = layout.read_blob(digest, what="manifest", limit=_MAX_SMALL_FILE)
        manifest = parse_manifest(raw, digest)
        if manifest.config.media_type != mt.CONFIG:
            raise BundleFormatError(f"{digest[:19]}… is not a ModelPack bundle (config type {manifest.config.media_type})", hint="import it with a tool made for that artifact type")
        bundle_name = validate_name(str(name or manifest.summary.get("name") or _name_from_refs(ref_names)))
        planned.append((manifest, bundle_name, raw, _import_tags(bundle_name, manifest, ref_names, existing)))
    for manifest, _, _, _ in planned:
        for desc in (manifest.config, *manifest.layers):
            what = desc.filepath or "config"
            _check_blob(layout, desc.digest, what, exactly=desc.size)
            target.put_chunks(_at_most(layout.iter_blob(desc.digest), desc.size, what), expected=desc.digest, what=what)
    return [target.add_manifest(bundle_name, raw, tags) for _, bundle_name, raw, tags in planned]


def _import_tags(name: str, manifest: Manifest, ref_names: list[str], existing: dict[tuple[str, str], str]) -> list[str]:
    """The local tags an imported version gets: the pull rule, except that named tags never move."""
    version = manifest.summary.get("version")
    wanted = {str(version)} if version is not None else set()
    wanted |= {r.rsplit(":", 1)[-1] for r in ref_names if ":" in r and not r.rsplit(":", 1)[-1].isdigit()}
    if len(wanted) > _MAX_TAGS:
        raise UsageError(f"not an OCI layout we import: {len(wanted):,} tags on one manifest (at most {_MAX_TAGS})")
    mine = {t: d for (n, t), d in existing.items() if n == name}
    return arrival_tags(name, manifest.digest, sorted(wanted), mine, origin="the one imported", hint="import it under another name with name=NAME", move_named=False)


def _check_blob(layout: Store, digest: str, what: str, *, most: int | None = None, exactly: int | None = None) -> None:
    """A layout blob must be a regular file of the recorded size (not a link to /dev/zero, not a giant)."""
    path = layout.blob_path(digest)
    try:
        info = path.stat()
    except OSError as exc:
        raise UsageError(f"not an OCI layout: {what} ({digest[:19]}…) is missing") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"not an OCI layout: {what} ({digest[:19]}…) is not a regular file")
    if (most is not None and info.st_size > most) or (exactly is not None and info.st_size != exactly):
        expected = f"at most {most:,}" if most is not None else f"{exactly:,}"
        raise UsageError(f"not an OCI layout: {what} is {info.st_size:,} bytes, expected {expected}")


def _at_most(chunks: Iterator[bytes], limit: int, what: str) -> Iterator[bytes]:
    """``chunks``, refused as soon as they exceed ``limit`` bytes (a file that grows while copied)."""
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise UsageError(f"not an OCI layout: {what} is larger than its descriptor's {limit:,} bytes")
        yield chunk


def _name_from_refs(ref_names: list[str]) -> str:
    for r in ref_names:
        if ":" in r:
            return r.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    raise UsageError("cannot tell the bundle's name", hint="pass name=NAME")


__all__ = ["ExportFormat", "export", "import_", "layout_members", "ref_text"]
