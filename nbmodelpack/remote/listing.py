"""``ls --remote``: every bundle version on a remote, from manifests only (never weights).

Example:
    >>> [i.ref for i in list_remote("team")]  # doctest: +SKIP
    ['team/mnist-mlp:2', 'team/mnist-mlp:1']
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._files import load_json_limited
from ..bundle import mediatypes as mt
from ..bundle.info import BundleInfo
from ..bundle.manifest import Manifest, parse_manifest, sha256_digest
from ..bundle.refs import NAME_RE
from ..errors import (
    AuthError,
    BundleFormatError,
    BundleNotFound,
    IntegrityError,
    ModelPackError,
    RemoteError,
    RemoteUnavailable,
)
from ..store import get_store
from . import published
from .config import Remote, get_remote
from .connect import open_transport
from .transport import Transport, check_manifest_bytes

_WORKERS = 4


def list_remote(name: str | None = None) -> list[BundleInfo]:
    """Every bundle version on a remote, newest first per name; ``remote`` is set on each.

    On a registry, repositories come from the catalog (where allowed) under the
    remote's namespace, else from what this store published there.

    Example:
        >>> [i.ref for i in list_remote("team")]  # doctest: +SKIP
        ['team/alpha:2', 'team/alpha:1']
    """
    target = get_remote(name)
    transport = open_transport(target)
    transport.ping()
    return list_versions(transport, _repositories(transport, target), prefix=f"{target.namespace}/" if target.namespace else "")


def _repositories(transport: Transport, target: Remote) -> list[str]:
    prefix = f"{target.namespace}/" if target.namespace else ""
    catalog = transport.repositories()
    if catalog is not None:
        return [r for r in catalog if r.startswith(prefix) and NAME_RE.match(r[len(prefix):])]
    places = [p for ps in published.places(get_store()).values() for p in ps if p.startswith(f"{target.name}/")]
    return sorted({target.repository(p.split("/", 1)[1].rsplit(":", 1)[0]) for p in places})


def list_versions(transport: Transport, repos: list[str], *, prefix: str = "") -> list[BundleInfo]:
    """The ModelPack versions in ``repos`` (tags merged per digest); a manifest that cannot be read is left out.

    Example:
        >>> list_versions(MemoryTransport(), [])  # doctest: +SKIP
        []
    """

    def manifest_of(repo_tag: tuple[str, str]) -> tuple[str, str, bytes, str] | None:
        repo, tag = repo_tag
        try:
            raw, digest = transport.get_manifest(repo, tag)
            check_manifest_bytes(raw, where=transport.where(repo))
        except (BundleNotFound, IntegrityError):
            return None  # deleted meanwhile, or damaged: a listing shows what can be read
        except (AuthError, RemoteUnavailable):
            raise
        except RemoteError:
            return None  # oversized or not JSON: likewise left out
        return repo, tag, raw, digest

    # One pool for every manifest GET, across repositories and their tags: a
    # repository of 200 tags is 200 round trips, which only parallelism hides.
    with ThreadPoolExecutor(_WORKERS) as pool:
        pairs = [(repo, t) for repo, tags in zip(repos, pool.map(transport.tags, repos), strict=True) for t in tags]
        fetched = [m for m in pool.map(manifest_of, pairs) if m is not None]
    by_digest: dict[tuple[str, str], tuple[bytes, list[str]]] = {}
    for repo, tag, raw, digest in fetched:
        by_digest.setdefault((repo, digest), (raw, []))[1].append(tag)
    infos = []
    for (repo, digest), (raw, tags) in by_digest.items():
        try:
            manifest = parse_manifest(raw, digest)
        except BundleFormatError:
            continue
        if manifest.config.media_type != mt.CONFIG:
            continue  # not a ModelPack bundle
        config = None if manifest.summary else _config(transport, repo, manifest)
        infos.append(BundleInfo.from_manifest(manifest, name=repo[len(prefix):], tags=tags, remote=transport.name, config=config))
    infos.sort(key=lambda i: (i.name, -(i.version or 0), i.digest))
    return infos


# A ModelPack config is a few hundred bytes; another tool's artifact is listed from it.
MAX_LISTED_CONFIG = 64 << 10


def _config(transport: Transport, repo: str, manifest: Manifest) -> Any:
    """The config of an artifact another tool made (no summary of ours), read bounded and verified; None if unreadable."""
    desc = manifest.config
    if desc.size > MAX_LISTED_CONFIG:
        return None
    try:
        data = b"".join(transport.get_blob(repo, desc, lambda n: None))
        if sha256_digest(data) != desc.digest:
            return None
        return load_json_limited(data, what="config", max_bytes=MAX_LISTED_CONFIG)
    except (AuthError, RemoteUnavailable):
        raise
    except ModelPackError:
        return None  # a listing shows what can be read
