"""REST handlers under ``/nbmodelpack/api/``: each a few lines over :mod:`.views` and :mod:`.actions`.

Every handler needs Jupyter's own authentication (token/cookie + XSRF) and is
authorized on the resource ``nbmodelpack:bundles``. There is one error path
(:func:`replies`): a user error answers ``{"error": "one line"}`` with the
status its class carries (``http_status``), anything else is logged and
answers a one-line 500. Never a traceback in a body.

    GET  bundles[?since=ETAG]          local bundles grouped by name (304 when unchanged)
    GET  bundles/NAME[?ref=TAG]        versions of NAME + detail of one (card, lineage, layers)
    GET  remotes                       configured remotes
    GET  remotes/REMOTE/bundles        bundles published on a remote
    POST actions/ACTION                tag | delete | stop (answered at once);
                                       publish | pull | serve (answer a job)
    GET  jobs, jobs/ID                 background jobs: state, progress, result, error
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.httputil import responses
from tornado.ioloop import IOLoop

from ..errors import UsageError
from . import actions, views
from .actions import JOBS
from .jobs import user_error

AUTH_RESOURCE = "nbmodelpack:bundles"
MAX_BODY = 64 * 1024  # an action's body is a few short fields
log = logging.getLogger("nbmodelpack.labapi")

Reply = tuple[int, Any]  # (HTTP status, JSON payload; None: no body)


def replies(method: Callable[..., Awaitable[Reply]]) -> Callable[..., Awaitable[None]]:
    """Write what a handler method returns as JSON; the one place errors become answers."""

    @functools.wraps(method)
    async def reply(self: _Handler, *args: Any) -> None:
        started = time.perf_counter()
        try:
            status, payload = await method(self, *args)
        except Exception as exc:
            error = user_error(exc)
            if error is None:
                log.exception("%s %s failed", self.request.method, self.request.path)
                status, payload = 500, {"error": f"internal error: {type(exc).__name__} (see the Jupyter server log)"}
            else:
                status, payload = error.http_status, {"error": str(error).replace("\n", " ")}
        self.set_status(status)
        self.set_header("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.1f}")
        self.finish(None if payload is None else json.dumps(payload))

    return reply


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking store/registry work off the event loop."""
    return await IOLoop.current().run_in_executor(None, fn, *args)


class _Handler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Errors raised before a handler runs (authentication, authorization): one JSON line too.
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif exc is not None and not isinstance(exc, tornado.web.HTTPError):
            message = f"internal error: {type(exc).__name__} (see the Jupyter server log)"
        else:
            message = responses.get(status_code, "error")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))

    def json_body(self) -> Any:
        """The request body as JSON, size- and depth-checked (a user error otherwise)."""
        raw = self.request.body or b"{}"
        if len(raw) > MAX_BODY:
            raise UsageError(f"the request body is too large (limit {MAX_BODY // 1024} KiB)")
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise UsageError("the request body is not JSON") from None


class BundlesHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    @replies
    async def get(self) -> Reply:
        since = self.get_query_argument("since", None) or (self.request.headers.get("If-None-Match") or "").strip('"') or None
        etag, payload = await _off_loop(views.local_listing, since)
        self.set_header("ETag", f'"{etag}"')
        return (304, None) if payload is None else (200, payload)


class BundleHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    @replies
    async def get(self, name: str) -> Reply:
        return 200, await _off_loop(views.bundle_detail, name, self.get_query_argument("ref", None))


class RemotesHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    @replies
    async def get(self) -> Reply:
        return 200, {"remotes": await _off_loop(views.remotes)}


class RemoteBundlesHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    @replies
    async def get(self, remote: str) -> Reply:
        return 200, await _off_loop(views.remote_listing, remote)


class ActionHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    @replies
    async def post(self, action: str) -> Reply:
        return await _off_loop(actions.perform, action, self.json_body())


class JobsHandler(_Handler):
    @tornado.web.authenticated
    @authorized
    @replies
    async def get(self, job_id: str | None = None) -> Reply:
        if job_id is None:
            return 200, {"jobs": [j.to_json() for j in JOBS.list()]}
        return 200, {"job": JOBS.get(job_id).to_json()}


class UnknownRouteHandler(_Handler):
    """Anything else under the API prefix: a JSON 404, like every other answer here."""

    @tornado.web.authenticated
    @authorized
    @replies
    async def get(self, path: str) -> Reply:
        raise views.NotFound(f"no such endpoint: {path[:80]!r}", hint="see GET bundles, remotes, jobs; POST actions/ACTION")

    post = get


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
            (url_path_join(base, "(.*)"), UnknownRouteHandler),
        ],
    )


def warm_up() -> None:
    """Read the local listing once (server start), so the sidebar's first request is quick."""
    try:
        views.local_listing()
    except Exception as exc:  # the sidebar's first request reports it in one line
        log.debug("warm-up listing failed: %s", exc)


__all__ = ["AUTH_RESOURCE", "JOBS", "setup_handlers", "warm_up"]
