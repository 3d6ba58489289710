"""Verification records: "this blob file was hashed by us and has not changed since".

A blob is hashed when it enters a store (every writer in :mod:`.blobs` hashes what it
writes). Afterwards a record ``<root>/.verified/<hex>`` remembers the file's identity at
that moment: size, device, inode, mtime and ctime (nanoseconds). A read whose
``lstat`` still matches the record skips the re-hash; anything that writes the file
(even one that restores the mtime with ``utime``) changes its ctime, so the next read
re-hashes it.

Records are an optimisation only: a missing, garbled or foreign record just costs a
re-hash. Each record carries an HMAC under a per-user key (``.verified.key`` in the
user's own store, ``$NBMODELPACK_HOME/store``, mode 0600), so a record found in a layout
someone else wrote (a team share, an imported directory, a tampered copy) is never
believed: only this user's own hashing can vouch for a file. Records are written atomically (temp + rename), one
file per blob, so readers take no lock and concurrent writers cannot garble one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import paths
from .._files import atomic_write, create_once

RECORD_DIR = ".verified"
KEY_FILE = ".verified.key"
_MAX_RECORD_BYTES = 1024
_MAX_NOTE_BYTES = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = ("size", "dev", "ino", "mtime_ns", "ctime_ns")
_KEYS: dict[str, bytes] = {}
_KEY_LOCK = threading.Lock()

Identity = tuple[int, int, int, int, int]


def identity(info: os.stat_result) -> Identity:
    """What a record compares: ``(size, device, inode, mtime_ns, ctime_ns)``.

    Example:
        >>> len(identity(os.stat(".")))
        5
    """
    return (info.st_size, info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


def file_identity(path: Path) -> Identity | None:
    """The identity of a regular file (not following links), or ``None`` if there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return identity(info) if stat.S_ISREG(info.st_mode) else None


def key_path() -> Path:
    """Where this user's record key lives: in their own store, never in a layout being read.

    Example:
        >>> key_path().name
        '.verified.key'
    """
    return paths.store_dir() / KEY_FILE


def _key() -> bytes:
    """This user's record key, created on first use (0600, written once)."""
    path = key_path()
    name = str(path)
    with _KEY_LOCK:
        key = _KEYS.get(name)
    if key is not None:
        return key
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_once(path, secrets.token_hex(32).encode(), mode=0o600)  # a racing process's key wins; both read it back
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.getuid():
            raise PermissionError(f"{path} must be a private file of this user (mode 0600)")
        key = f.read(256).strip()
    if len(key) < 32:
        raise PermissionError(f"{path} is too short to be a record key")
    with _KEY_LOCK:
        _KEYS[name] = key
    return key


def _mac(key: bytes, digest: str, ident: Identity) -> str:
    message = "|".join([digest, *map(str, ident)]).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _read_json(path: Path, cap: int) -> Any:
    """A small JSON file of ours: a regular file (no link, FIFO or device), at most ``cap`` bytes read.

    Raises ``OSError`` or ``ValueError``; every caller treats either as "no record".
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        return json.loads(f.read(cap + 1)[:cap])


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    # Not fsynced: a record lost in a crash only costs a re-hash.
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc).encode(), fsync=False)


class Records:
    """The verification records of one store (``root/.verified``).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "blob").write_bytes(b"x")
        >>> records = Records(root)
        >>> records.matches("sha256:" + "0" * 64, file_identity(root / "blob"))
        False
    """

    def __init__(self, root: Path) -> None:
        self.dir = root / RECORD_DIR

    def path(self, digest: str) -> Path:
        return self.dir / digest.split(":", 1)[1]

    def matches(self, digest: str, ident: Identity | None) -> bool:
        """Whether a valid record of ours says the file with ``ident`` was verified as ``digest``."""
        if ident is None:
            return False
        try:
            doc = _read_json(self.path(digest), _MAX_RECORD_BYTES)
            recorded = tuple(int(doc[k]) for k in _FIELDS)
            mac = str(doc["mac"])
            key = _key()
        except (OSError, ValueError, KeyError, TypeError):
            return False  # no record, a garbled one, or no key: the caller re-hashes
        return recorded == ident and hmac.compare_digest(mac, _mac(key, digest, ident))

    def record(self, digest: str, ident: Identity | None) -> None:
        """Remember that the file with ``ident`` was just hashed by us and matched ``digest``.

        Best effort: a store we cannot write records in is still a valid store.
        """
        if ident is None:
            return
        with contextlib.suppress(OSError, PermissionError):
            doc: dict[str, Any] = dict(zip(_FIELDS, ident, strict=True))
            doc["mac"] = _mac(_key(), digest, ident)
            _write_json(self.path(digest), doc)

    def forget(self, digest: str) -> None:
        """Drop a blob's record (it was removed, or found damaged)."""
        with contextlib.suppress(OSError):
            self.path(digest).unlink(missing_ok=True)

    def write_note(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        """Keep a small MAC'd JSON document (e.g. a signature check's outcome) under ``kind/key``.

        Same rules as records: atomic, best effort, believed only with this user's MAC.
        """
        with contextlib.suppress(OSError, PermissionError, TypeError, ValueError):
            body = json.dumps(doc, sort_keys=True)
            mac = hmac.new(_key(), f"{kind}|{key}|{body}".encode(), hashlib.sha256).hexdigest()
            _write_json(self.dir / kind / key, {"doc": body, "mac": mac})

    def read_note(self, kind: str, key: str) -> dict[str, Any] | None:
        """A document :meth:`write_note` kept, or ``None`` (none, garbled, or not MAC'd by this user)."""
        try:
            outer = _read_json(self.dir / kind / key, _MAX_NOTE_BYTES)
            body, mac = str(outer["doc"]), str(outer["mac"])
            expected = hmac.new(_key(), f"{kind}|{key}|{body}".encode(), hashlib.sha256).hexdigest()
            doc = json.loads(body) if hmac.compare_digest(mac, expected) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return doc if isinstance(doc, dict) else None

    def drop_note(self, kind: str, key: str) -> None:
        with contextlib.suppress(OSError):
            (self.dir / kind / key).unlink(missing_ok=True)

    def prune(self, present: Callable[[str], bool], *, cutoff: float) -> None:
        """Drop records and notes whose blob is no longer ``present``, and temp files older than ``cutoff``."""
        for folder in (self.dir, *self._folders()):
            try:
                entries = list(folder.iterdir())
            except OSError:
                continue
            for path in entries:
                with contextlib.suppress(OSError):
                    if ".tmp-" in path.name:  # atomic_write's temp file, left by a killed writer
                        if path.lstat().st_mtime < cutoff:
                            path.unlink()
                    elif _HEX64.fullmatch(path.name) and not present("sha256:" + path.name):
                        path.unlink()

    def _folders(self) -> list[Path]:
        try:
            return [p for p in self.dir.iterdir() if p.is_dir() and not p.is_symlink()]
        except OSError:
            return []
