"""Keeping a store healthy: ``gc`` (unreferenced blobs, stale staging) and ``fsck`` (re-hash everything).

Both keep the verification records in step: ``gc`` drops the records of blobs it
removes (and of blobs that are gone), ``fsck`` renews the record of every blob it
finds intact and drops those of damaged or missing ones.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelPackError
from .blobs import hash_file, open_blob
from .records import file_identity

if TYPE_CHECKING:
    from . import Store

_DIGEST_BYTES = re.compile(rb"sha256:[a-f0-9]{64}")
_SCAN_BYTES = 64 << 20


@dataclass(frozen=True)
class FsckProblem:
    """One blob that is missing or does not match its digest."""

    digest: str
    filepath: str
    problem: str

    def __str__(self) -> str:
        return f"{self.filepath or self.digest}: {self.problem} ({self.digest[:19]}…)"


def referenced(store: Store) -> set[str]:
    """Every digest some indexed manifest needs: the manifests, their configs and layers."""
    live: set[str] = set()
    for _, digest in store.refs():
        live.add(digest)
        try:
            manifest = store.manifest(digest)
        except ModelPackError:
            live.update(_digests_named_in(store, digest))
            continue
        live.add(manifest.config.digest)
        live.update(d.digest for d in manifest.layers)
    return live


def drop_unreferenced(store: Store, digests: Iterable[str]) -> None:
    """Remove blobs an unfinished operation wrote (a refused pull, a failed decrypt), keeping any a version refers to.

    Checked under the store lock, so a version committed meanwhile keeps its blobs.

    Example:
        >>> drop_unreferenced(store, ["sha256:" + "0" * 64])  # doctest: +SKIP
    """
    wanted = list(digests)
    if not wanted:
        return
    with store.lock():
        live = referenced(store)
        for digest in wanted:
            if digest not in live:
                store.blobs.remove(digest)


def _digests_named_in(store: Store, digest: str) -> set[str]:
    # A manifest we cannot parse (too strict for it, or damaged) still protects every blob it
    # names: gc must never turn "unreadable" into "deleted".
    try:
        with open_blob(store.blob_path(digest)) as f:
            raw = f.read(_SCAN_BYTES)
    except OSError:
        return set()
    return {m.decode() for m in _DIGEST_BYTES.findall(raw)}


def newest_mtime(path: Path) -> float:
    """The latest modification time in a directory tree (a live pull keeps touching its files)."""
    newest = path.lstat().st_mtime
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                newest = max(newest, os.lstat(os.path.join(top, name)).st_mtime)
            except OSError:
                continue  # removed while we looked: it was live
    return newest


def stale_staging(store: Store, cutoff: float) -> list[Path]:
    """Staging directories (and legacy ``.pull-*`` ones) untouched since ``cutoff``."""
    candidates = [*store.root.glob(".pull-*")]
    staging = store.root / "staging"
    if staging.is_dir():
        candidates += list(staging.iterdir())
    out = []
    for path in candidates:
        try:
            if newest_mtime(path) <= cutoff:
                out.append(path)
        except OSError:
            continue
    return out


def gc(store: Store, *, grace_seconds: float = 3600.0) -> tuple[int, int]:
    """Delete unreferenced blobs and stale staging directories; return ``(count, bytes)`` of blobs.

    Anything newer than ``grace_seconds`` is kept: a pack or pull in another process
    may be writing it before it commits (and commit re-checks its blobs under the lock).
    """
    cutoff = time.time() - grace_seconds
    with store.lock():
        live = referenced(store)
        count = freed = 0
        for path in store.blob_dir.iterdir():
            if "sha256:" + path.name in live:
                continue
            stat = path.lstat()
            if stat.st_mtime > cutoff or path.is_dir():
                continue
            path.unlink()  # also a writer's leftover temp file, which has no record
            store.blobs.forget_record("sha256:" + path.name)
            count += 1
            freed += stat.st_size
        _prune_records(store, cutoff)
        for path in stale_staging(store, cutoff):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return count, freed


def fsck(store: Store) -> list[FsckProblem]:
    """Re-hash every referenced blob; return the problems (empty when healthy)."""
    problems: list[FsckProblem] = []
    for digest in sorted({digest for _, digest in store.refs()}):
        try:
            manifest = store.manifest(digest)
        except ModelPackError as exc:
            problems.append(FsckProblem(digest, "manifest", str(exc)))
            continue
        for desc in (manifest.config, *manifest.layers):
            what = desc.filepath or "config"
            path = store.blob_path(desc.digest)
            if path.is_symlink():
                problems.append(FsckProblem(desc.digest, what, "a symbolic link, not a blob"))
            elif not path.exists():
                problems.append(FsckProblem(desc.digest, what, "missing"))
            else:
                before = file_identity(path)
                if hash_file(path) != desc.digest:
                    problems.append(FsckProblem(desc.digest, what, "corrupted (content does not match digest)"))
                elif before == file_identity(path):
                    store.blobs.record(desc.digest, before)
    for problem in problems:
        store.blobs.forget_record(problem.digest)
    _prune_records(store, time.time() - 3600.0)
    unique = {(p.digest, p.filepath): p for p in problems}
    return list(unique.values())


def _prune_records(store: Store, cutoff: float) -> None:
    """Drop records and signature notes whose blob is gone (removed by hand, or by a gc that was killed)."""
    if store.blobs.records is not None:
        store.blobs.records.prune(lambda digest: store.blob_path(digest).is_file(), cutoff=cutoff)
