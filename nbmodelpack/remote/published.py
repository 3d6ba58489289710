"""Where local versions were published: ``<store root>/published.json``.

``{manifest digest: ["REMOTE/NAME:TAG", ...]}``. A side file rather than an index
annotation, because a manifest (and so its digest) never changes. Written
atomically under the store's lock, so concurrent publishes lose nothing.

Example:
    >>> import tempfile
    >>> from nbmodelpack.store import Store
    >>> s = Store(tempfile.mkdtemp())
    >>> record(s, "sha256:" + "a" * 64, "team/mnist-mlp:1")
    >>> places(s)["sha256:" + "a" * 64]
    ['team/mnist-mlp:1']
"""

from __future__ import annotations

import json

from .._files import atomic_write
from ..errors import StoreError
from ..store import Store

_FILE = "published.json"
_CAP = 64 << 20  # a damaged or hostile file is ignored rather than read whole


def places(store: Store) -> dict[str, list[str]]:
    """``{manifest digest: ["REMOTE/NAME:TAG", ...]}`` for every version this store published.

    Example:
        >>> places(get_store())  # doctest: +SKIP
        {'sha256:…': ['team/mnist-mlp:1']}
    """
    path = store.root / _FILE
    try:
        if path.stat().st_size > _CAP:
            return {}
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): [str(x) for x in v] for k, v in doc.items() if isinstance(v, list)}


def record(store: Store, digest: str, where: str) -> None:
    """Remember that the version ``digest`` is at ``where`` (a reference ``pull`` accepts).

    Example:
        >>> record(get_store(), info.digest, "team/mnist-mlp:1")  # doctest: +SKIP
    """
    with store.lock():
        doc = places(store)
        found = doc.setdefault(digest, [])
        if where in found:
            return
        found.append(where)
        try:
            atomic_write(store.root / _FILE, json.dumps(doc, indent=1, sort_keys=True).encode())
        except OSError as exc:
            raise StoreError(f"cannot write {_FILE}: {exc.strerror}", hint="check the disk (full? read-only?)") from exc
