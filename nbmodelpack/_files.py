"""Small-file helpers at the bottom of the layers: atomic writes and bounded JSON reads.

The store, config, keys and credentials write through :func:`atomic_write`;
everything that parses JSON someone else wrote (manifests, configs, layer
JSON, registry answers, REST bodies) parses through :func:`load_json_limited`.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from .errors import BundleFormatError, ModelPackError

# What OCI distribution allows for a manifest; we use it for every small JSON document.
MAX_JSON_BYTES = 4 << 20
# Nothing we write nests deeper than a handful of levels; 64 leaves room for others' JSON.
MAX_JSON_DEPTH = 64


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file and a rename: readers see the old file or the new one.

    The temp file is created with ``mode`` (0600 for secrets, never briefly
    world-readable) and fsynced unless ``fsync=False``. A symlink at ``path`` is
    replaced, never written through.

    Example:
        >>> atomic_write(Path("/tmp/example.json"), b"{}")  # doctest: +SKIP
    """
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def create_once(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
    """Create ``path`` holding ``data`` unless it exists; never replace it. True if this call created it.

    Two processes opening a new store at once must not both write an empty
    ``index.json``: the second would erase what the first committed in between. The
    file is written aside and hard-linked into place (atomic, fails if the name exists);
    where hard links are impossible it is created exclusively and then filled. ``mode``
    is the file's mode from the start (0600 for secrets).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.json"
        >>> create_once(p, b"{}"), create_once(p, b"[]"), p.read_bytes()
        (True, False, b'{}')
    """
    tmp = path.with_name(f".{path.name}.new-{uuid.uuid4().hex}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here: exclusive create, then fill
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def load_json_limited(
    raw: bytes | str,
    *,
    what: str,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    error: type[ModelPackError] = BundleFormatError,
) -> Any:
    """Parse JSON someone else wrote, refusing more than ``max_bytes`` or deeper than ``max_depth``.

    Any failure is one ``error(...)`` line naming ``what`` (a ``BundleFormatError``
    unless the caller picks another class, e.g. ``UsageError`` for a request body).

    Example:
        >>> load_json_limited(b'{"a": [1, 2]}', what="example")
        {'a': [1, 2]}
        >>> load_json_limited(b"[" * 100 + b"]" * 100, what="example")
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.BundleFormatError: unreadable bundle: example nests deeper than 64 levels
    """
    if len(raw) > max_bytes:
        raise error(f"{what} is {len(raw):,} bytes, more than the {max_bytes:,} allowed")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise error(f"{what} nests deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and integers too long to convert
        raise error(f"{what} is not valid JSON ({exc})") from None
    if _depth_exceeds(value, max_depth):
        raise error(f"{what} nests deeper than {max_depth} levels")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    # Iterative: a recursive walk is what a deep document would attack.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
