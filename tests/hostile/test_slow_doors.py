"""The slow doors over a representative subset of cases: CLI subprocess, serve, REST, the real registry.

Each call here starts a process or a server, so only ``SLOW_CASES`` go through
them: one case per family (a class target, an import side effect, a pt2
pickle, stored source, a malformed manifest, an escaping filepath) plus the
genuine control. The cheap doors see every case (``test_doors.py``).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import subprocess_env

import nbmodelpack
from nbmodelpack.labapi.handlers import JOBS

from .craft import LOADS, REFUSE
from .deliver import plant, push_to_registry
from .doors import PARSE_REFUSED, SLOW_CASES, Outcome, call_api, judge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from processes import stop  # noqa: E402
from registry_server import Registry, free_port, running_registry  # noqa: E402

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _cli(*args: str, timeout: float = 120) -> Outcome:
    proc = subprocess.run([sys.executable, "-m", "nbmodelpack", *args], env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    return Outcome(args[0], proc.returncode == 0, proc.stdout if proc.returncode == 0 else proc.stderr)


@pytest.mark.parametrize("name", SLOW_CASES)
def test_cli_subprocess_runs_no_payload(victim, cases, name):
    case = cases[name]
    plant(victim.store, case)
    bad: list[str] = []
    files = victim.out / "files"
    for args, loads_model, leftover in (
        (("show", case.ref), False, None),
        (("export", case.ref, "--files", str(files)), False, files),
        (("compress", case.ref, "--quantize", "fp16"), True, None),
    ):
        outcome = _cli(*args)
        bad += judge(outcome, must_fail=loads_model and case.expect == REFUSE, must_load=loads_model and case.expect == LOADS, leftover=leftover)
        bad += [f"{outcome.op}: {p}" for p in victim.problems()]
        victim.clear_sentinels()
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)


@pytest.mark.parametrize("name", SLOW_CASES)
def test_serve_refuses_in_one_line_and_starts_no_worker_that_runs_the_payload(victim, cases, name):
    case = cases[name]
    plant(victim.store, case)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbmodelpack", "serve", case.ref, "--port", str(port)],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    ready = False
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
            except requests.RequestException:
                ready = False
            if ready:
                break
            time.sleep(0.5)
    finally:
        stop(proc)  # its own session: the server and the workers it started
    _, err = proc.communicate(timeout=10)
    outcome = Outcome("serve", ready, "" if ready else err)
    bad = judge(outcome, must_fail=case.expect == REFUSE, must_load=case.expect == LOADS)
    if not ready and proc.returncode in (0, None):
        bad.append(f"serve neither started nor failed (exit {proc.returncode})")
    bad += victim.problems()
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)


# Both engines refuse through the same check and probe (all cases above); one case per kind of
# refusal (a rebuild that would run code, untrusted stored source) shows Ray's path takes them.
@pytest.mark.parametrize("name", ["class-os-system", "source-untrusted"])
def test_serve_engine_ray_refuses_in_one_line_before_ray_starts(victim, cases, name):
    pytest.importorskip("ray.serve")
    case = cases[name]
    assert case.expect == REFUSE
    plant(victim.store, case)
    proc = subprocess.run(
        [sys.executable, "-m", "nbmodelpack", "serve", case.ref, "--engine", "ray", "--port", str(free_port())],
        env=subprocess_env(), capture_output=True, text=True, timeout=120, start_new_session=True,
    )
    # One line and nothing else: a Ray head that had started would have logged to stderr too.
    bad = judge(Outcome("serve --engine ray", proc.returncode == 0, proc.stderr), must_fail=True, must_load=False)
    bad += victim.problems()
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)


# ---- REST (the sidebar's API on a real Jupyter server) -----------------------------------------


def _one_line(body: Any) -> list[str]:
    error = body.get("error", "") if isinstance(body, dict) else ""
    return [] if error and "\n" not in error and "Traceback" not in error else [f"error is not one line: {str(body)[:200]}"]


@pytest.mark.parametrize("name", SLOW_CASES)
async def test_rest_lists_shows_serves_and_pulls_without_running_the_payload(victim, cases, api, name):
    case = cases[name]
    plant(victim.store, case)
    bad: list[str] = []
    await api("GET", "remotes")
    victim.before = victim.snapshot()  # after the Jupyter server wrote its own data dirs under tmp
    status, body = await api("GET", "bundles")
    if status >= 500:
        bad.append(f"GET bundles answered {status}")
    status, body = await api("GET", f"bundles/{case.repo}", params={"ref": case.tag})
    if status >= 500:
        bad.append(f"GET bundles/{case.repo} answered {status}")
    elif status >= 400:
        bad += _one_line(body)
    bad += victim.problems()
    victim.clear_sentinels()

    status, body = await api("POST", "actions/serve", {"ref": case.ref})
    if status == 202:
        job = await asyncio.to_thread(JOBS.wait, body["job"]["id"], 120)
        try:
            if case.expect == REFUSE and job.state == "done":
                bad.append("serve (REST) was not refused")
            if job.state != "done" and ("\n" in str(job.error) or "Traceback" in str(job.error)):
                bad.append(f"serve job error is not one line: {str(job.error)[:200]}")
        finally:
            if job.state == "done":
                nbmodelpack.serving.stop_server("all")
    elif status >= 500:
        bad.append(f"POST actions/serve answered {status}")
    else:
        bad += _one_line(body)
    bad += [f"serve (REST): {p}" for p in victim.problems()]
    victim.clear_sentinels()

    status, body = await api("POST", "actions/pull", {"remote": "share", "ref": case.ref})
    if status == 202:
        job = await asyncio.to_thread(JOBS.wait, body["job"]["id"], 120)
        if case.case in PARSE_REFUSED and job.state == "done":
            bad.append("pull (REST) of a malformed manifest was not refused")
    elif status >= 500:
        bad.append(f"POST actions/pull answered {status}")
    bad += [f"pull (REST): {p}" for p in victim.problems()]
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)


async def test_rest_job_that_does_not_exist_is_404(api):
    status, body = await api("GET", "jobs/nope")
    assert status == 404, (status, body)


# ---- the real registry ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def team(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    namespace = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:60].strip("-")
    nbmodelpack.remote.add_remote("team", f"oci://{registry.host}/{namespace}", insecure=True)
    nbmodelpack.remote.login("team", registry.user, registry.password)
    return namespace


@pytest.mark.parametrize("name", [n for n in SLOW_CASES if n != "class-linear-control"] + ["class-linear-control"])
def test_pull_from_a_registry_runs_nothing_and_keeps_the_store_whole(victim, cases, registry, team, name):
    case = cases[name]
    push_to_registry(registry.url, (registry.user, registry.password), f"{team}/{case.repo}", case)
    victim.before = victim.snapshot()
    outcome = call_api("pull", lambda: nbmodelpack.pull(f"team/{case.repo}:{case.tag}"))
    bad = judge(outcome, must_fail=case.case in PARSE_REFUSED) + victim.problems()
    if outcome.ok:
        load = call_api("load", lambda: nbmodelpack.load(case.ref))
        bad += judge(load, must_fail=case.expect == REFUSE, must_load=case.expect == LOADS)
        bad += [f"after load: {p}" for p in victim.problems()]
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)
