"""The sidebar's actions: ``tag``, ``delete`` and ``stop`` answer at once; ``publish``, ``pull`` and ``serve`` start a job.

Every request field is checked (names and references with
:mod:`nbmodelpack.bundle.refs`) before anything touches the store, and a job is
started only once its action is known to make sense (the bundle exists, the
remote is configured, the extra it needs is installed), so those mistakes are
answered at once instead of as a failed job. Nothing here runs a shell.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from .. import api
from ..bundle.refs import parse, validate_tag
from ..errors import InvalidReference, UsageError
from .jobs import Jobs
from .views import NotFound, check_remote, local_ref, serving_urls

JOBS = Jobs()

Work = Callable[[], Any]


def _field(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"missing field {key!r}" if value is None else f"field {key!r} must be a string")
    return value


def _jsonable(result: Any) -> Any:
    return json.loads(api.to_json(result))


def _needs(*modules: str) -> None:
    """Import what a job will need now, so a missing extra is a one-line answer, not a failed job."""
    for module in modules:
        importlib.import_module(module)


# ---- jobs: (ref shown in the job, work) -------------------------------------------------------
def _publish(body: dict[str, Any]) -> tuple[str, Work]:
    ref = str(local_ref(body.get("ref")))
    remote = check_remote(_field(body, "remote") or "")
    tag = _field(body, "tag", required=False)
    if tag is not None:
        validate_tag(tag)
    api.show(ref)
    _needs("nbmodelpack.remote")
    from .. import remote as remotes

    return ref, lambda: _jsonable(remotes.publish(ref, remote, tag=tag))


def _pull(body: dict[str, Any]) -> tuple[str, Work]:
    remote = check_remote(_field(body, "remote") or "")
    ref = parse(_field(body, "ref") or "")
    if not ref.is_local:
        raise InvalidReference(repr(body["ref"]), hint="give the name on the remote, e.g. mnist-mlp:2")
    remote_ref = f"{remote}/{ref}"
    _needs("nbmodelpack.remote")
    from .. import remote as remotes

    return remote_ref, lambda: _jsonable(remotes.pull(remote_ref))


def _key(body: dict[str, Any]) -> Any:
    """``{"identity": FILE or AGE-SECRET-KEY-…}`` or ``{"passphrase": "…"}`` (at most one) for an encrypted bundle."""
    identity = _field(body, "identity", required=False)
    passphrase = _field(body, "passphrase", required=False)
    if identity and passphrase:
        raise UsageError("give 'identity' or 'passphrase', not both")
    return api.Passphrase(passphrase) if passphrase else identity


def _serve(body: dict[str, Any]) -> tuple[str, Work]:
    ref = str(local_ref(body.get("ref")))
    key = _key(body)
    api.show(ref)  # a missing bundle is a 404 now, not a failed job later
    _needs("starlette", "uvicorn", "nbmodelpack.serving.app")
    from .. import serving

    # A child process probes the bundle (trust policy, key, rebuild through the load path) and
    # exits with one line if it cannot be served; that line becomes the job's error. Port 0: a
    # free port; the server stops when this Jupyter server exits. The key reaches the child in
    # its environment, never on its command line.
    return ref, lambda: _jsonable(serving.serve(ref, port=0, identity=key))


JOB_ACTIONS: dict[str, Callable[[dict[str, Any]], tuple[str, Work]]] = {"publish": _publish, "pull": _pull, "serve": _serve}


# ---- answered at once -------------------------------------------------------------------------
def _stop(body: dict[str, Any]) -> Any:
    ref = str(local_ref(body.get("ref")))
    store = api.get_store()
    _, digest = store.resolve(ref)
    from ..serving import registry

    # Servers are registered under the ref they were started with (maybe `NAME:latest`):
    # stop every server of this version, whatever ref named it.
    urls = [url for d, url in serving_urls(store).items() if d == digest]
    if not urls:
        raise UsageError(f"no running server serves {ref}")
    return {"stopped": [s.to_json() for url in urls for s in registry.stop(url)]}


def _tag(body: dict[str, Any]) -> Any:
    ref = str(local_ref(body.get("ref")))
    new_tag = validate_tag(_field(body, "tag") or "")
    return api.tag(ref, new_tag).to_json()


def _delete(body: dict[str, Any]) -> Any:
    ref = local_ref(body.get("ref"))
    if parse(str(body.get("ref")), default_tag=None).tag is None and ref.digest is None:
        raise UsageError("name the version to delete, e.g. mnist-mlp:2")
    return {"removed": api.rm(str(ref))}


NOW_ACTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {"tag": _tag, "delete": _delete, "stop": _stop}


def perform(action: str, body: Any) -> tuple[int, dict[str, Any]]:
    """Run one action, or start its job; return ``(HTTP status, reply)``.

    Example:
        >>> perform("tag", {"ref": "mnist-mlp:1", "tag": "prod"})  # doctest: +SKIP
        (200, {'result': {...}})
    """
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    if action in JOB_ACTIONS:
        ref, work = JOB_ACTIONS[action](body)
        return 202, {"job": JOBS.submit(action, ref, work).to_json()}
    if action in NOW_ACTIONS:
        return 200, {"result": NOW_ACTIONS[action](body)}
    known = ", ".join(sorted([*JOB_ACTIONS, *NOW_ACTIONS]))
    raise NotFound(f"unknown action {action!r}", hint=f"actions: {known}")


__all__ = ["JOBS", "JOB_ACTIONS", "NOW_ACTIONS", "perform"]
