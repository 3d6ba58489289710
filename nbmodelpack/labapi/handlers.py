"""REST handlers under ``/nbmodelpack/api/``: thin wrappers over :mod:`nbmodelpack.api`.

Every handler needs Jupyter's own authentication (token/cookie + XSRF) and is
authorized on the resource ``nbmodelpack:bundles``. Names and references are
checked with :mod:`nbmodelpack.bundle.refs` before anything touches the store;
nothing here runs a shell. User errors answer ``{"error": "one line"}``.

    GET  bundles[?since=ETAG]          local bundles grouped by name (304 when unchanged)
    GET  bundles/NAME[?ref=TAG]        versions of NAME + detail of one (card, lineage, layers)
    GET  remotes                       configured remotes
    GET  remotes/REMOTE/bundles        bundles published on a remote
    POST actions/ACTION                tag | delete | stop (answered at once);
                                       publish | pull | serve (answer a job)
    GET  jobs, jobs/ID                 background jobs: state, progress, result, error
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.httputil import responses
from tornado.ioloop import IOLoop

from .. import api, config
from ..bundle.info import BundleInfo, tag_order
from ..bundle.refs import NAME_RE, Reference, parse, validate_name, validate_tag
from ..errors import (
    AuthError,
    BundleNotFound,
    InvalidReference,
    ModelPackError,
    RemoteError,
    UsageError,
)
from ..store import Store
from .jobs import JobNotFound, Jobs

AUTH_RESOURCE = "nbmodelpack:bundles"
JOBS = Jobs()


# ---- JSON views of API results (shared by the handlers and bench/sidebar.py) -----------------
def version_summary(info: BundleInfo, serving: dict[str, str]) -> dict[str, Any]:
    """One version as the sidebar lists it (no layer table, no full recipe).

    Example:
        >>> info = BundleInfo(name="m", version=1, digest="sha256:" + "0" * 64, tags=["1", "latest"])
        >>> version_summary(info, {})["ref"]
        'm:1'
    """
    recipe = info.recipe or {}
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
        "architecture": info.architecture.get("class", ""),
        "description": info.description,
        "metrics": info.metrics,
        "op": recipe.get("op", ""),
        "parent": recipe.get("parent"),
        "badges": badges,
        "published": info.published,
        "serving": url,
        "remote": info.remote,
    }


def group(infos: list[BundleInfo], serving: dict[str, str]) -> list[dict[str, Any]]:
    """Versions grouped by bundle name, newest version first within each.

    Example:
        >>> group([], {})
        []
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for info in infos:
        by_name.setdefault(info.name, []).append(version_summary(info, serving))
    out = []
    for name in sorted(by_name):
        versions = sorted(by_name[name], key=lambda v: -(v["version"] or 0))
        head = versions[0]
        out.append({"name": name, "latest": head["ref"], "description": head["description"], "versions": versions})
    return out


_list_cache: dict[str, tuple[str, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def _servers(store: Store) -> dict[str, str]:
    """Manifest digest -> URL of every model server running on this machine (any process)."""
    try:
        from .. import serving
    except ImportError:  # serving is an optional part
        return {}
    running = serving.servers()
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


# (store root, name, manifest digest) -> BundleInfo. A manifest never changes (its digest is
# its name), so after the first listing only new versions are read; tags come from the index.
_info_cache: dict[tuple[str, str, str], BundleInfo] = {}
_INFO_CACHE_MAX = 50_000


def _local_infos(store: Store) -> list[BundleInfo]:
    """What ``api.ls()`` answers, reading only manifests this process has not seen yet."""
    root = str(store.root)
    published = store.published()
    out = []
    for (name, digest), tags in store.refs().items():
        key = (root, name, digest)
        info = _info_cache.get(key)
        if info is None:
            try:
                info = BundleInfo.from_manifest(store.manifest(digest), name=name)
            except ModelPackError:
                continue  # as `modelpack ls`: fsck reports it, the listing shows what can be read
            if len(_info_cache) >= _INFO_CACHE_MAX:
                _info_cache.clear()
            _info_cache[key] = info
        out.append(dataclasses.replace(info, tags=sorted(tags, key=tag_order), published=published.get(digest, [])))
    out.sort(key=lambda i: (i.name, -(i.version or 0), i.digest))
    return out


def warm_up() -> None:
    """Read the local listing once (server start), so the sidebar's first request is quick."""
    with contextlib.suppress(ModelPackError):  # the sidebar's first request reports it
        local_listing()


def local_listing(since: str | None = None) -> tuple[str, dict[str, Any] | None]:
    """``(etag, payload)`` of ``GET bundles``; payload is None when ``since`` is still current.

    The etag is derived from the identity of ``index.json`` and ``published.json``
    (every write replaces them) and the running servers, so an unchanged store
    costs two ``stat`` calls.

    Example:
        >>> etag, payload = local_listing()
        >>> local_listing(etag)[1] is None
        True
    """
    store = api.get_store()
    stamp = ""
    for file in ("index.json", "published.json"):  # both are replaced, never edited in place
        try:
            st = (store.root / file).stat()
            stamp += f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}|"
        except FileNotFoundError:
            stamp += "-|"
    serving = _servers(store)
    etag = hashlib.sha1(f"{store.root}|{stamp}|{sorted(serving.items())}".encode()).hexdigest()[:20]
    if since == etag:
        return etag, None
    key = str(store.root)
    with _cache_lock:
        cached = _list_cache.get(key)
    if cached and cached[0] == etag:
        return etag, cached[1]
    payload = {"etag": etag, "store": str(store.root), "bundles": group(_local_infos(store), serving)}
    with _cache_lock:
        _list_cache[key] = (etag, payload)
    return etag, payload


def bundle_detail(name: str, ref: str | None) -> dict[str, Any]:
    """``GET bundles/NAME``: every version of NAME and the detail of one (default: newest)."""
    validate_name(name)
    infos = api.ls(name)
    if not infos:
        raise BundleNotFound(name, hint="run `modelpack ls` to see what exists")
    serving = _servers(api.get_store())
    target = _local_ref(f"{name}:{ref}" if ref else infos[0].ref)
    if target.name != name:
        raise UsageError(f"{target} is not a version of {name}")
    opened = api.get_store().open(target)  # one read of the manifest for the info and the card
    info = opened.info
    recipe = info.recipe or {}
    lineage = [*recipe.get("lineage", []), {k: v for k, v in recipe.items() if k != "lineage"}]
    return {
        "name": name,
        "versions": group(infos, serving)[0]["versions"],
        "detail": {
            **version_summary(info, serving),
            "card": opened.card().render(),
            "recipe": recipe,
            "lineage": [step for step in lineage if step],
            "layers": info.layers,
        },
    }


def remotes() -> list[dict[str, Any]]:
    """The remotes named in ``config.toml`` (``[remotes.NAME] url = …``)."""
    return [{"name": n, "url": str(v["url"])} for n, v in config.remotes_table().items()]


def remote_listing(remote: str) -> dict[str, Any]:
    """``GET remotes/REMOTE/bundles``: bundles published on one remote."""
    _check_remote(remote)
    from .. import remote as remote_mod

    infos = remote_mod.list_remote(remote)
    return {"remote": remote, "bundles": group(list(infos), {})}


def _check_remote(remote: str) -> str:
    if not NAME_RE.match(remote or ""):
        raise InvalidReference(repr(remote), hint="a remote name is lowercase letters, digits and . _ -")
    if remote not in {r["name"] for r in remotes()}:
        raise _NotFound(f"no remote named {remote!r}", hint="add one with `modelpack remote add NAME URL`")
    return remote


class _NotFound(UsageError):
    """A remote or job that does not exist (answered 404)."""


def _local_ref(text: Any) -> Reference:
    if not isinstance(text, str):
        raise UsageError("a reference must be a string like mnist-mlp:2")
    ref = parse(text)
    if not ref.is_local:
        raise InvalidReference(repr(text), hint="a local reference is NAME:VERSION or NAME@sha256:…")
    return ref


def _str_field(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"missing field {key!r}" if value is None else f"field {key!r} must be a string")
    return value


# ---- actions ----------------------------------------------------------------------------------
def _publish(body: dict[str, Any]) -> tuple[str, Callable[[], Any]]:
    ref = str(_local_ref(body.get("ref")))
    remote = _check_remote(_str_field(body, "remote") or "")
    tag = _str_field(body, "tag", required=False)
    if tag is not None:
        validate_tag(tag)
    from .. import remote as remote_mod
    return ref, lambda: _jsonable(remote_mod.publish(ref, remote, tag=tag))


def _pull(body: dict[str, Any]) -> tuple[str, Callable[[], Any]]:
    remote = _check_remote(_str_field(body, "remote") or "")
    ref = parse(_str_field(body, "ref") or "")
    if not ref.is_local:
        raise InvalidReference(repr(body["ref"]), hint="give the name on the remote, e.g. mnist-mlp:2")
    remote_ref = f"{remote}/{ref}"
    from .. import remote as remote_mod
    return remote_ref, lambda: _jsonable(remote_mod.pull(remote_ref))


def _serve(body: dict[str, Any]) -> tuple[str, Callable[[], Any]]:
    ref = str(_local_ref(body.get("ref")))
    api.show(ref)  # a missing bundle is a 404 now, not a failed job later
    from .. import serving

    # port 0: a free port; the server stops when this Jupyter server exits.
    return ref, lambda: _jsonable(serving.serve(ref, port=0))


def _stop(body: dict[str, Any]) -> Any:
    ref = str(_local_ref(body.get("ref")))
    store = api.get_store()
    _, digest = store.resolve(ref)
    from .. import serving

    # Servers are registered under the ref they were started with (maybe `NAME:latest`):
    # stop every server of this version, whatever ref named it.
    urls = [url for d, url in _servers(store).items() if d == digest]
    if not urls:
        raise UsageError(f"no running server serves {ref}")
    stopped = [s for url in urls for s in serving.stop_server(url)]
    return {"stopped": [s.to_json() for s in stopped]}


def _tag(body: dict[str, Any]) -> Any:
    ref = str(_local_ref(body.get("ref")))
    new_tag = validate_tag(_str_field(body, "tag") or "")
    return api.tag(ref, new_tag).to_json()


def _delete(body: dict[str, Any]) -> Any:
    ref = _local_ref(body.get("ref"))
    if parse(str(body.get("ref")), default_tag=None).tag is None and ref.digest is None:
        raise UsageError("name the version to delete, e.g. mnist-mlp:2")
    return {"removed": api.rm(str(ref))}


_JOB_ACTIONS: dict[str, Callable[[dict[str, Any]], tuple[str, Callable[[], Any]]]] = {
    "publish": _publish,
    "pull": _pull,
    "serve": _serve,
}
_NOW_ACTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {"tag": _tag, "delete": _delete, "stop": _stop}


def _jsonable(result: Any) -> Any:
    return json.loads(api.to_json(result))


# ---- handlers ---------------------------------------------------------------------------------
def _status(exc: ModelPackError) -> int:
    if isinstance(exc, BundleNotFound | _NotFound | JobNotFound):
        return 404
    if isinstance(exc, InvalidReference | UsageError):
        return 400
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, RemoteError):
        return 502  # the remote failed, not this server
    return 409


class _Handler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # One line for the user; a traceback only in the server log (APIHandler logs it).
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif exc is not None and not isinstance(exc, tornado.web.HTTPError):
            message = f"internal error: {type(exc).__name__} (see the Jupyter server log)"
        else:
            message = responses.get(status_code, "error")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    def _fail(self, exc: ModelPackError) -> None:
        self.set_status(_status(exc))
        self.finish(json.dumps({"error": str(exc)}))

    def _missing(self, what: str, exc: ImportError) -> None:
        # publish/pull (nbmodelpack.remote) and serve (nbmodelpack.serving) are optional parts.
        self.set_status(501)
        self.finish(json.dumps({"error": f"{what} is not available here ({exc.name or exc} is missing)"}))

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking store/registry work off the event loop."""
        return await IOLoop.current().run_in_executor(None, fn, *args)

    def _reply(self, payload: Any, started: float) -> None:
        self.set_header("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.1f}")
        self.finish(json.dumps(payload))


class BundlesHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        started = time.perf_counter()
        since = self.get_query_argument("since", None) or (self.request.headers.get("If-None-Match") or "").strip('"') or None
        try:
            etag, payload = await self._call(local_listing, since)
        except ModelPackError as exc:
            return self._fail(exc)
        self.set_header("ETag", f'"{etag}"')
        if payload is None:
            self.set_status(304)
            self.finish()
            return
        self._reply(payload, started)


class BundleHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        started = time.perf_counter()
        try:
            payload = await self._call(bundle_detail, name, self.get_query_argument("ref", None))
        except ModelPackError as exc:
            return self._fail(exc)
        self._reply(payload, started)


class RemotesHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        started = time.perf_counter()
        try:
            payload = {"remotes": await self._call(remotes)}
        except ModelPackError as exc:
            return self._fail(exc)
        self._reply(payload, started)


class RemoteBundlesHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    async def get(self, remote: str) -> None:
        started = time.perf_counter()
        try:
            payload = await self._call(remote_listing, remote)
        except ImportError as exc:
            return self._missing("listing remotes", exc)
        except ModelPackError as exc:
            return self._fail(exc)
        self._reply(payload, started)


class ActionHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    async def post(self, action: str) -> None:
        started = time.perf_counter()
        try:
            body = self.get_json_body() or {}
        except tornado.web.HTTPError:
            return self._fail(UsageError("the request body is not JSON"))
        try:
            if not isinstance(body, dict):
                raise UsageError("the request body must be a JSON object")
            if action in _JOB_ACTIONS:
                ref, work = _JOB_ACTIONS[action](body)
                job = JOBS.submit(action, ref, work)
                self.set_status(202)
                return self._reply({"job": job.to_json()}, started)
            if action in _NOW_ACTIONS:
                result = await self._call(_NOW_ACTIONS[action], body)
                return self._reply({"result": result}, started)
            known = ", ".join(sorted([*_JOB_ACTIONS, *_NOW_ACTIONS]))
            raise _NotFound(f"unknown action {action!r}", hint=f"actions: {known}")
        except ImportError as exc:
            self._missing(action, exc)
        except ModelPackError as exc:
            self._fail(exc)


class JobsHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str | None = None) -> None:
        started = time.perf_counter()
        try:
            if job_id is None:
                return self._reply({"jobs": [j.to_json() for j in JOBS.list()]}, started)
            job = JOBS.get(job_id)
        except ModelPackError as exc:
            return self._fail(exc)
        self._reply({"job": job.to_json()}, started)


def setup_handlers(web_app: Any) -> None:
    """Add the routes under ``{base_url}nbmodelpack/api/``."""
    base = url_path_join(web_app.settings["base_url"], "nbmodelpack", "api")
    segment = r"([^/]+)"
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "bundles"), BundlesHandler),
            (url_path_join(base, "bundles", segment), BundleHandler),
            (url_path_join(base, "remotes"), RemotesHandler),
            (url_path_join(base, "remotes", segment, "bundles"), RemoteBundlesHandler),
            (url_path_join(base, "actions", segment), ActionHandler),
            (url_path_join(base, "jobs"), JobsHandler),
            (url_path_join(base, "jobs", segment), JobsHandler),
        ],
    )


__all__ = ["AUTH_RESOURCE", "JOBS", "bundle_detail", "group", "local_listing", "remote_listing", "remotes", "setup_handlers", "version_summary"]
