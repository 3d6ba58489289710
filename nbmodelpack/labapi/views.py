"""What the sidebar lists and shows: JSON views built from :mod:`nbmodelpack.api` calls.

The local listing carries an etag derived from the identity of ``index.json``,
``published.json`` and ``config.toml`` (every write replaces them, never edits
them) and the running servers, so an unchanged store answers 304 after three
``stat`` calls. It also carries the configured remotes, so the sidebar notices a
remote added from a cell or a terminal with the same poll that notices a new
version, and re-lists what is published.
"Serving" badges come from :mod:`nbmodelpack.serving.registry`, which needs no
extra: the listing works on an install without the ``serve`` extra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from typing import Any

from .. import api, config, paths
from ..bundle.card import lineage_lines
from ..bundle.info import BundleInfo
from ..bundle.metrics import labelled
from ..bundle.refs import NAME_RE, Reference, parse, validate_name
from ..commands import default_var_name
from ..errors import BundleNotFound, InvalidReference, ModelPackError, UsageError
from ..serving import registry
from ..store import Store


class NotFound(UsageError):
    """A remote that is not configured (answered 404)."""

    http_status = 404


def serving_urls(store: Store) -> dict[str, str]:
    """Manifest digest -> URL of every model server running on this machine (any process).

    Example:
        >>> serving_urls(api.get_store())  # doctest: +SKIP
        {'sha256:…': 'http://127.0.0.1:41234'}
    """
    running = registry.servers()
    if not running:
        return {}
    by_tag = {(name, tag): digest for (name, digest), tags in store.refs().items() for tag in tags}
    out = {}
    for entry in running:
        try:
            ref = parse(entry.ref)
        except ModelPackError:
            continue
        digest = ref.digest or by_tag.get((ref.name, ref.tag or "latest"))
        if digest and ref.is_local:
            out[digest] = entry.url
    return out


def version_names(store: Store) -> dict[str, str]:
    """Manifest digest -> ``NAME:VERSION`` of every local version (lineage shows parents by name).

    Example:
        >>> version_names(api.get_store())  # doctest: +SKIP
        {'sha256:…': 'mnist-mlp:1'}
    """
    out = {}
    for (name, digest), tags in store.refs().items():
        numbers = sorted((t for t in tags if t.isdigit()), key=int)
        out[digest] = f"{name}:{numbers[0] if numbers else sorted(tags)[0]}" if tags else f"{name}@{digest}"
    return out


def version_summary(info: BundleInfo, serving: dict[str, str]) -> dict[str, Any]:
    """One version as the sidebar lists it (no layer table, no full recipe).

    Example:
        >>> info = BundleInfo(name="m", version=1, digest="sha256:" + "0" * 64, tags=["1", "latest"])
        >>> version_summary(info, {})["ref"]
        'm:1'
    """
    recipe = info.recipe if isinstance(info.recipe, dict) else {}
    badges = list(info.badges)
    url = serving.get(info.digest)
    if url:
        badges.append("serving")
    return {
        # The ref as the store that holds it names it; `remote` says which remote that is.
        "ref": dataclasses.replace(info, remote=None).ref,
        "name": info.name,
        "version": info.version,
        "digest": info.digest,
        "tags": info.tags,
        "created": info.created,
        "size": info.size,
        "parameters": info.parameters,
        "precision": info.precision,
        "quantization": info.quantization,
        "architecture": info.architecture_line,
        "description": info.description,
        # Flat and labelled ("validation accuracy"), so the sidebar shows where each was measured.
        "metrics": labelled(info.metrics),
        "op": recipe.get("op", ""),
        "parent": recipe.get("parent"),
        "parent_ref": recipe.get("parent_ref"),
        "derived": info.parent_line,
        "lineage_text": lineage_lines(recipe),
        "badges": badges,
        "encrypted": info.encrypted,
        # The variable `%modelpack load REF` binds: Python's rule, so the sidebar never guesses.
        "var_name": default_var_name(info.name),
        "published": info.published,
        "serving": url,
        "remote": info.remote,
    }


def group(infos: list[BundleInfo], serving: dict[str, str]) -> list[dict[str, Any]]:
    """Versions grouped by bundle name, in the order given (``ls`` and remote listings: newest first).

    Example:
        >>> group([BundleInfo(name="m", version=2, digest="sha256:" + "2" * 64)], {})[0]["latest"]
        'm:2'
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for info in infos:
        by_name.setdefault(info.name, []).append(version_summary(info, serving))
    return [
        {"name": name, "latest": versions[0]["ref"], "description": versions[0]["description"], "versions": versions}
        for name, versions in sorted(by_name.items())
    ]


_listing: dict[str, tuple[str, dict[str, Any]]] = {}  # store root -> (etag, payload) of the last listing
_listing_lock = threading.Lock()


def forget_listing() -> None:
    """Drop the remembered listing (benchmarks measure a cold listing with it)."""
    with _listing_lock:
        _listing.clear()


def local_listing(since: str | None = None) -> tuple[str, dict[str, Any] | None]:
    """``(etag, payload)`` of ``GET bundles``; payload is None when ``since`` is still current.

    Example:
        >>> etag, payload = local_listing()  # doctest: +SKIP
        >>> local_listing(etag)[1] is None  # doctest: +SKIP
        True
    """
    store = api.get_store()
    stamp = ""
    # All three are replaced, never edited in place: a new inode or mtime means new content.
    for file in (store.root / "index.json", store.root / "published.json", paths.config_file()):
        try:
            st = file.stat()
            stamp += f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}|"
        except FileNotFoundError:
            stamp += "-|"
    serving = serving_urls(store)
    etag = hashlib.sha1(f"{store.root}|{stamp}|{sorted(serving.items())}".encode()).hexdigest()[:20]
    if since == etag:
        return etag, None
    key = str(store.root)
    with _listing_lock:
        cached = _listing.get(key)
    if cached and cached[0] == etag:
        return etag, cached[1]
    infos = api.ls(store=store)  # with where each version was published
    payload = {"etag": etag, "store": key, "remotes": remotes(), "bundles": group(infos, serving)}
    with _listing_lock:
        _listing[key] = (etag, payload)
    return etag, payload


def bundle_detail(name: str, ref: str | None) -> dict[str, Any]:
    """``GET bundles/NAME``: every version of NAME and the detail of one (default: newest).

    Example:
        >>> bundle_detail("mnist-mlp", "2")["detail"]["ref"]  # doctest: +SKIP
        'mnist-mlp:2'
    """
    validate_name(name)
    store = api.get_store()
    infos = api.ls(name, store=store)  # with where each version was published
    if not infos:
        raise BundleNotFound(name, hint="run `modelpack ls` to see what exists")
    serving = serving_urls(store)
    target = local_ref(f"{name}:{ref}" if ref else infos[0].ref)
    if target.name != name:
        raise UsageError(f"{target} is not a version of {name}")
    opened = store.open(target)  # one read of the manifest for the info and the card
    listed = {i.digest: i.published for i in infos}
    info = dataclasses.replace(opened.info, published=listed.get(opened.digest, []))
    recipe = info.recipe if isinstance(info.recipe, dict) else {}
    earlier = recipe.get("lineage")  # a bundle's own annotation: shown only if it has the expected shape
    steps = [*(earlier if isinstance(earlier, list) else []), {k: v for k, v in recipe.items() if k != "lineage"}]
    named = version_names(store)
    kept = [
        {**step, "parent_ref": named.get(step["parent"]) or step.get("parent_ref")} if isinstance(step.get("parent"), str) else step
        for step in steps
        if isinstance(step, dict) and step
    ]
    return {
        "name": name,
        "versions": group(infos, serving)[0]["versions"],
        "detail": {
            **version_summary(info, serving),
            "card": opened.card().render(),
            "recipe": recipe,
            # Each step with its words ("mnist-mlp:1: pack (its metrics: …)"): ancestors' metrics as theirs.
            "lineage": [{**step, "text": line} for step, line in zip(kept, lineage_lines(recipe), strict=False)],
            "layers": info.layers,
        },
    }


def remotes() -> list[dict[str, Any]]:
    """The remotes named in ``config.toml`` (``[remotes.NAME] url = …``).

    Example:
        >>> remotes()  # doctest: +SKIP
        [{'name': 'team', 'url': 'oci://127.0.0.1:5000/team'}]
    """
    return [{"name": n, "url": str(v["url"])} for n, v in config.remotes_table().items()]


def check_remote(remote: str) -> str:
    """``remote`` if it is a configured remote's name; else a one-line 400 or 404."""
    if not NAME_RE.match(remote or ""):
        raise InvalidReference(repr(remote), hint="a remote name is lowercase letters, digits and . _ -")
    if remote not in config.remotes_table():
        raise NotFound(f"no remote named {remote!r}", hint="add one with `modelpack remote add NAME URL`")
    return remote


def remote_listing(remote: str) -> dict[str, Any]:
    """``GET remotes/REMOTE/bundles``: bundles published on one remote (needs the ``remote`` extra).

    Example:
        >>> remote_listing("team")["bundles"]  # doctest: +SKIP
        []
    """
    check_remote(remote)
    from .. import remote as remotes_mod

    return {"remote": remote, "bundles": group(remotes_mod.list_remote(remote), {})}


def local_ref(text: Any) -> Reference:
    """A local reference (``NAME:TAG`` or ``NAME@sha256:…``) from a request field.

    Example:
        >>> str(local_ref("m:1"))
        'm:1'
    """
    if not isinstance(text, str):
        raise UsageError("a reference must be a string like mnist-mlp:2")
    ref = parse(text)
    if not ref.is_local:
        raise InvalidReference(repr(text), hint="a local reference is NAME:VERSION or NAME@sha256:…")
    return ref


__all__ = [
    "NotFound",
    "bundle_detail",
    "check_remote",
    "forget_listing",
    "group",
    "local_listing",
    "local_ref",
    "remote_listing",
    "remotes",
    "serving_urls",
    "version_names",
    "version_summary",
]
