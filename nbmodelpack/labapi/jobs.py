"""Background jobs for long sidebar actions (publish, pull, serve).

A job runs one API call in a worker thread; its progress (the ``progress()``
bars the call opens) and its result or one-line error are polled with
``GET /nbmodelpack/api/jobs/{id}``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import progress as _progress
from ..errors import ModelPackError, UsageError
from ..extras import missing_extra

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_KEEP = 200  # finished jobs kept for polling; older ones are forgotten
MAX_PENDING = 32  # running or queued jobs; more are refused rather than queued without bound


log = logging.getLogger("nbmodelpack.labapi")

class JobNotFound(UsageError):
    """A job id that this server does not know (answered 404)."""

    http_status = 404


def user_error(exc: BaseException) -> ModelPackError | None:
    """The one-line error a user should see for ``exc``, or None for a bug (log it, answer 500).

    A module missing because an extra is not installed is a user error that names the extra.

    Example:
        >>> str(user_error(ModuleNotFoundError("No module named 'starlette'", name="starlette")))
        "this needs the 'serve' extra: module 'starlette' is not installed (pip install 'nbmodelpack[serve]')"
    """
    if isinstance(exc, ModelPackError):
        return exc
    if isinstance(exc, ModuleNotFoundError):
        return missing_extra(exc)
    return None


@dataclass
class Job:
    """One background action: its state, progress, and result or error."""

    id: str
    action: str
    ref: str
    state: str = "running"  # running | done | error
    step: str = ""
    done: float = 0.0
    total: float | None = None
    result: Any = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def to_json(self) -> dict[str, Any]:
        """What ``GET jobs/{id}`` answers."""
        return {
            "id": self.id,
            "action": self.action,
            "ref": self.ref,
            "state": self.state,
            "progress": {"step": self.step, "done": self.done, "total": self.total},
            "result": self.result,
            "error": self.error,
            "started": self.started,
            "finished": self.finished,
        }


class Jobs:
    """A small thread pool plus a table of jobs.

    Example:
        >>> jobs = Jobs()
        >>> job = jobs.submit("tag", "m:1", lambda: {"ok": True})
        >>> jobs.wait(job.id).state
        'done'
    """

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nbmodelpack-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, action: str, ref: str, fn: Callable[[], Any]) -> Job:
        """Start ``fn`` in a worker thread; return its job at once."""
        job = Job(id=uuid.uuid4().hex, action=action, ref=ref)
        with self._lock:
            if sum(j.state == "running" for j in self._jobs.values()) >= MAX_PENDING:
                raise UsageError(f"{MAX_PENDING} actions are already waiting or running", hint="wait for some to finish")
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state != "running"]
            for old in sorted(finished, key=lambda j: j.started)[: max(0, len(finished) - _KEEP)]:
                del self._jobs[old.id]
        self._pool.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn: Callable[[], Any]) -> None:
        def observe(step: str, done: float, total: float | None) -> None:
            job.step, job.done, job.total = step, done, total

        try:
            with _progress.observe(observe):
                job.result = fn()
            job.state = "done"
        except Exception as exc:
            error = user_error(exc)
            if error is None:  # a bug, not a user error: one line for the user, the rest in the log
                log.exception("job %s (%s %s) failed", job.id, job.action, job.ref)
            job.error = str(error).replace("\n", " ") if error is not None else f"internal error in {job.action}: {type(exc).__name__}"
            job.state = "error"
        finally:
            job.finished = time.time()

    def get(self, job_id: str) -> Job:
        """The job with this id (``JobNotFound`` if unknown, whatever its shape)."""
        job = self._jobs.get(job_id) if JOB_ID_RE.match(job_id) else None
        if job is None:
            raise JobNotFound(f"no such job: {job_id[:64]!r}", hint="jobs are forgotten when the server restarts")
        return job

    def list(self) -> list[Job]:
        """Every job still remembered, newest first."""
        return sorted(self._jobs.values(), key=lambda j: -j.started)

    def wait(self, job_id: str, timeout: float = 30.0) -> Job:
        """Block until the job finishes (tests and scripts)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job.state == "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        return job
