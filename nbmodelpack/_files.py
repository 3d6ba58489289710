"""Atomic small-file writes shared by the store, config, keys and credentials."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file and a rename: readers see the old file or the new one.

    The temp file is created with ``mode`` (0600 for secrets, never briefly
    world-readable) and fsynced unless ``fsync=False``.

    Example:
        >>> atomic_write(Path("/tmp/example.json"), b"{}")  # doctest: +SKIP
    """
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
