"""The sidebar's REST API (`nbmodelpack.labapi`) on a real Jupyter server (pytest-jupyter)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from e2e.processes import free_port
from jupyter_server.auth.authorizer import Authorizer

import nbmodelpack
from nbmodelpack.labapi.handlers import AUTH_RESOURCE, JOBS

pytest_plugins = ["pytest_jupyter.jupyter_server"]

ENDPOINTS = [
    ("GET", "bundles"),
    ("GET", "bundles/tiny"),
    ("GET", "remotes"),
    ("GET", "remotes/team/bundles"),
    ("POST", "actions/tag"),
    ("GET", "jobs"),
    ("GET", "jobs/" + "0" * 32),
    ("GET", "no/such/endpoint"),
]




def _pack(name: str = "tiny", **kwargs: Any) -> nbmodelpack.BundleInfo:
    import torch
    from models import MLP

    return nbmodelpack.pack(MLP(hidden=4), name, example=torch.zeros(1, 1, 28, 28), **kwargs)


def _add_remote(name: str, url: str) -> None:
    from nbmodelpack.config import edit_config

    with edit_config() as cfg:
        cfg.setdefault("remotes", {})[name] = {"url": url}


# ---- listing --------------------------------------------------------------------------------
async def test_empty_store_lists_no_bundles(api):
    status, body = await api("GET", "bundles")
    assert status == 200
    assert body["bundles"] == [] and body["etag"]


async def test_packed_versions_are_listed_grouped_by_name_with_badges_and_summary(api):
    _pack(description="a tiny MLP")
    _pack()
    _pack("other")
    status, body = await api("GET", "bundles")
    assert status == 200
    names = [b["name"] for b in body["bundles"]]
    assert names == ["other", "tiny"]
    tiny = body["bundles"][1]
    assert [v["ref"] for v in tiny["versions"]] == ["tiny:2", "tiny:1"]
    assert tiny["latest"] == "tiny:2"
    v1 = tiny["versions"][1]
    assert v1["description"] == "a tiny MLP" and v1["parameters"] == 784 * 4 + 4 + 4 * 10 + 10
    assert v1["badges"] == [] and v1["serving"] is None and v1["size"] > 0
    assert "latest" in tiny["versions"][0]["tags"]


async def test_unchanged_store_answers_304_and_a_new_version_changes_the_etag(api):
    _pack()
    status, body = await api("GET", "bundles")
    etag = body["etag"]
    status, body = await api("GET", "bundles", params={"since": etag})
    assert status == 304 and body is None
    _pack()
    status, body = await api("GET", "bundles", params={"since": etag})
    assert status == 200 and body["etag"] != etag
    assert [v["ref"] for v in body["bundles"][0]["versions"]] == ["tiny:2", "tiny:1"]


async def test_a_remote_added_anywhere_changes_the_etag_and_is_in_the_listing(api):
    status, body = await api("GET", "bundles")
    etag = body["etag"]
    assert body["remotes"] == []
    _add_remote("team", "oci://127.0.0.1:5000/team")  # as `modelpack remote add` in a terminal does
    status, body = await api("GET", "bundles", params={"since": etag})
    assert status == 200 and body["etag"] != etag
    assert body["remotes"] == [{"name": "team", "url": "oci://127.0.0.1:5000/team"}]


@pytest.mark.parametrize(("name", "var"), [("mnist-mlp", "mnist_mlp"), ("class", "class_"), ("lambda", "lambda_"), ("1net", "model_1net")])
async def test_each_version_names_the_variable_python_would_bind(api, name, var):
    _pack(name)
    status, body = await api("GET", "bundles")
    version = body["bundles"][0]["versions"][0]
    assert version["var_name"] == var and version["encrypted"] is False


async def test_bundle_detail_has_card_lineage_and_layers_with_sizes(api):
    _pack(description="card text here")
    _pack()
    status, body = await api("GET", "bundles/tiny", params={"ref": "1"})
    assert status == 200
    assert [v["ref"] for v in body["versions"]] == ["tiny:2", "tiny:1"]
    detail = body["detail"]
    assert detail["ref"] == "tiny:1"
    assert "card text here" in detail["card"] and detail["card"].startswith("---")
    files = {layer["filepath"]: layer["size"] for layer in detail["layers"]}
    assert files["model.safetensors"] > 4 * 784 * 4
    assert detail["lineage"] and detail["lineage"][-1]["op"] == "pack"
    status, body = await api("GET", "bundles/tiny")
    assert body["detail"]["ref"] == "tiny:2"


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", "Tiny", "a b", "..%2F..%2Fetc", "x;rm -rf", "%2Fetc%2Fpasswd"])
async def test_bad_bundle_names_are_refused_with_400(api, name):
    status, body = await api("GET", f"bundles/{name}")
    assert status in (400, 404), body
    assert set(body) == {"error"} and "\n" not in body["error"]


async def test_missing_bundle_is_404_with_one_line(api):
    status, body = await api("GET", "bundles/nothing-here")
    assert status == 404
    assert body == {"error": "bundle not found: nothing-here (run `modelpack ls` to see what exists)"}
    _pack()
    status, body = await api("GET", "bundles/tiny", params={"ref": "9"})
    assert status == 404 and "tiny:9" in body["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"ref": "../../etc:1", "tag": "prod"},
        {"ref": "tiny:1", "tag": "a b"},
        {"ref": "tiny:1", "tag": "7"},
        {"ref": "team/tiny:1", "tag": "prod"},
        {"ref": ["tiny:1"], "tag": "prod"},
        {"tag": "prod"},
    ],
)
async def test_bad_tag_requests_are_400_and_change_nothing(api, body):
    _pack()
    before = (nbmodelpack.get_store().root / "index.json").read_bytes()
    status, reply = await api("POST", "actions/tag", body)
    assert status == 400 and set(reply) == {"error"}
    assert (nbmodelpack.get_store().root / "index.json").read_bytes() == before


@pytest.mark.parametrize(("method", "path"), [("GET", "nope"), ("POST", "bundles/x/y"), ("GET", "jobs/1/2")])
async def test_unknown_endpoints_are_a_json_404(api, method, path):
    status, body = await api(method, path)
    assert status == 404 and set(body) == {"error"} and body["error"].startswith("no such endpoint")


async def test_a_wrong_method_is_a_json_405(api):
    status, body = await api("POST", "bundles", {})
    assert status == 405 and set(body) == {"error"}


async def test_non_json_body_and_unknown_action(api):
    status, body = await api("POST", "actions/tag", "{not json")
    assert status == 400 and body == {"error": "the request body is not JSON"}
    status, body = await api("POST", "actions/format-disk", {"ref": "tiny:1"})
    assert status == 404 and body["error"].startswith("unknown action 'format-disk'")


async def test_unknown_and_malformed_job_ids_are_404_with_one_line(api):
    for job_id in ("f" * 32, "nope", "not-a-job", "x" * 500):
        status, body = await api("GET", f"jobs/{job_id}")
        assert status == 404 and set(body) == {"error"} and body["error"].startswith("no such job")
        assert "\n" not in body["error"] and len(body["error"]) < 200


# ---- actions ---------------------------------------------------------------------------------
async def test_tag_then_delete_a_version(api):
    _pack()
    _pack()
    status, body = await api("POST", "actions/tag", {"ref": "tiny:1", "tag": "prod"})
    assert status == 200 and "prod" in body["result"]["tags"]
    assert "prod" in nbmodelpack.show("tiny:prod").tags
    status, body = await api("POST", "actions/delete", {"ref": "tiny:1"})
    assert status == 200 and sorted(body["result"]["removed"]) == ["tiny:1", "tiny:prod"]
    assert [i.ref for i in nbmodelpack.ls()] == ["tiny:2"]
    status, body = await api("POST", "actions/delete", {"ref": "tiny:1"})
    assert status == 404


async def test_delete_needs_an_explicit_version(api):
    _pack()
    status, body = await api("POST", "actions/delete", {"ref": "tiny"})
    assert status == 400 and "name the version" in body["error"]
    assert [i.ref for i in nbmodelpack.ls()] == ["tiny:1"]


async def test_delete_of_a_bare_name_containing_latest_still_needs_a_version(api):
    _pack("latest-model")
    status, body = await api("POST", "actions/delete", {"ref": "latest-model"})
    assert status == 400 and "name the version" in body["error"]
    assert [i.ref for i in nbmodelpack.ls()] == ["latest-model:1"]


async def test_jobs_run_in_the_background_and_report_result_and_error(api):
    job = JOBS.submit("tag", "tiny:1", lambda: {"ok": 1})
    status, body = await api("GET", f"jobs/{job.id}")
    assert status == 200 and body["job"]["id"] == job.id
    await asyncio.to_thread(JOBS.wait, job.id)
    status, body = await api("GET", f"jobs/{job.id}")
    assert body["job"]["state"] == "done" and body["job"]["result"] == {"ok": 1}

    def fails() -> None:
        raise nbmodelpack.errors.RemoteUnavailable("cannot reach 127.0.0.1:1")

    bad = JOBS.submit("publish", "tiny:1", fails)
    await asyncio.to_thread(JOBS.wait, bad.id)
    status, body = await api("GET", f"jobs/{bad.id}")
    assert body["job"]["state"] == "error" and body["job"]["error"] == "remote: cannot reach 127.0.0.1:1"
    status, body = await api("GET", "jobs")
    assert {j["id"] for j in body["jobs"]} >= {job.id, bad.id}


# ---- remotes ---------------------------------------------------------------------------------
async def test_remotes_come_from_config_toml(api):
    status, body = await api("GET", "remotes")
    assert status == 200 and body == {"remotes": []}
    _add_remote("team", "oci://127.0.0.1:5000/team")
    status, body = await api("GET", "remotes")
    assert body == {"remotes": [{"name": "team", "url": "oci://127.0.0.1:5000/team"}]}


async def test_unknown_or_bad_remote_names(api):
    status, body = await api("GET", "remotes/nope/bundles")
    assert status == 404 and body["error"].startswith("no remote named 'nope'")
    status, body = await api("GET", "remotes/..%2F..%2Fetc/bundles")
    assert status == 400
    _pack()
    status, body = await api("POST", "actions/publish", {"ref": "tiny:1", "remote": "nope"})
    assert status == 404


async def test_registry_down_is_a_one_line_503(api):
    _add_remote("down", f"oci://127.0.0.1:{free_port()}/team")
    status, body = await api("GET", "remotes/down/bundles")
    assert status == 503 and set(body) == {"error"} and body["error"].startswith("remote: ")
    _pack()
    status, body = await api("POST", "actions/publish", {"ref": "tiny:1", "remote": "down"})
    assert status == 202
    job = await asyncio.to_thread(JOBS.wait, body["job"]["id"], 60)
    assert job.state == "error" and job.error and job.error.startswith("remote: ")


async def test_publish_to_a_file_remote_then_list_and_pull_back(api, tmp_path):
    _add_remote("share", (tmp_path / "share").as_uri())
    info = _pack()
    status, body = await api("POST", "actions/publish", {"ref": "tiny:1", "remote": "share"})
    assert status == 202
    job = await asyncio.to_thread(JOBS.wait, body["job"]["id"], 60)
    assert job.state == "done", job.error
    status, body = await api("GET", "remotes/share/bundles")
    assert status == 200
    published = [v for b in body["bundles"] for v in b["versions"]]
    assert [v["digest"] for v in published] == [info.digest]
    nbmodelpack.rm("tiny:1")
    status, body = await api("POST", "actions/pull", {"remote": "share", "ref": "tiny:1"})
    assert status == 202
    job = await asyncio.to_thread(JOBS.wait, body["job"]["id"], 60)
    assert job.state == "done", job.error
    assert [i.digest for i in nbmodelpack.ls()] == [info.digest]


# ---- authentication and authorization ----------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_refuses_requests_without_a_token(api, method, path):
    status, body = await api(method, path, body={} if method == "POST" else None, headers={"Authorization": ""})
    assert status == 403


class DenyModelPack(Authorizer):
    """Allows everything except the nbmodelpack resource."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != AUTH_RESOURCE


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_is_authorized_on_the_nbmodelpack_resource(jp_serverapp, jp_fetch, api, method, path):
    jp_serverapp.web_app.settings["authorizer"] = DenyModelPack(parent=jp_serverapp, identity_provider=jp_serverapp.identity_provider)
    status, body = await api(method, path, body={} if method == "POST" else None)
    assert status == 403
    assert AUTH_RESOURCE in body["error"]
    # ...while the rest of Jupyter still answers the same user.
    response = await jp_fetch("api", "contents")
    assert response.code == 200


def test_every_handler_is_authenticated_and_authorized(jp_serverapp):
    """The template's check: each route's verbs carry @authenticated and @authorized."""
    rules = [
        rule
        for host in jp_serverapp.web_app.default_router.rules
        for rule in getattr(host.target, "rules", [])
        if "/nbmodelpack/api/" in (getattr(rule.matcher, "_path", None) or "")
    ]
    handlers = {rule.target for rule in rules}
    assert len(rules) == 8 and len(handlers) == 7
    for handler in handlers:
        assert handler.auth_resource == AUTH_RESOURCE
        for verb in ("get", "post"):
            method = handler.__dict__.get(verb)
            if method is None:
                continue
            # @tornado.web.authenticated outermost, then jupyter_server's @authorized.
            assert method.__code__.co_filename.endswith("tornado/web.py"), f"{handler.__name__}.{verb} is not @authenticated"
            inner = method.__wrapped__
            assert inner.__code__.co_filename.endswith("jupyter_server/auth/decorator.py"), f"{handler.__name__}.{verb} is not @authorized"


async def test_job_progress_follows_the_bars_the_work_opens(api):
    import threading

    from nbmodelpack.progress import progress

    halfway, release = threading.Event(), threading.Event()

    def work() -> str:
        with progress(total=4, desc="push tiny", unit="step") as bar:
            bar.update(2)
            halfway.set()
            release.wait(10)
            bar.update(2)
        return "pushed"

    job = JOBS.submit("publish", "tiny:1", work)
    assert await asyncio.to_thread(halfway.wait, 10)
    status, body = await api("GET", f"jobs/{job.id}")
    assert body["job"]["state"] == "running"
    assert body["job"]["progress"] == {"step": "push tiny", "done": 2.0, "total": 4}
    release.set()
    await asyncio.to_thread(JOBS.wait, job.id)
    status, body = await api("GET", f"jobs/{job.id}")
    assert body["job"]["progress"]["done"] == 4.0 and body["job"]["result"] == "pushed"


async def test_serve_shows_a_serving_badge_and_stop_removes_it(api):
    _pack()
    status, body = await api("POST", "actions/serve", {"ref": "tiny:latest"})
    assert status == 202
    job = await asyncio.to_thread(JOBS.wait, body["job"]["id"], 120)
    assert job.state == "done", job.error
    url = job.result["url"]
    try:
        status, body = await api("GET", "bundles")
        version = body["bundles"][0]["versions"][0]
        assert version["serving"] == url and "serving" in version["badges"]
        # Started as tiny:latest, stopped as tiny:1: the same version.
        status, body = await api("POST", "actions/stop", {"ref": "tiny:1"})
        assert status == 200 and [s["url"] for s in body["result"]["stopped"]] == [url]
        status, body = await api("GET", "bundles")
        assert body["bundles"][0]["versions"][0]["serving"] is None
        status, body = await api("POST", "actions/stop", {"ref": "tiny:1"})
        assert status == 400 and body["error"] == "no running server serves tiny:1"
    finally:
        import nbmodelpack.serving

        with contextlib.suppress(nbmodelpack.errors.ModelPackError):
            nbmodelpack.serving.stop_server("all")


async def test_serving_a_missing_bundle_is_404_at_once(api):
    status, body = await api("POST", "actions/serve", {"ref": "nothing:1"})
    assert status == 404 and body["error"].startswith("bundle not found: nothing:1")


async def test_a_compressed_version_has_its_badge_and_its_lineage_names_the_parent(api):
    import torch

    parent = _pack()
    nbmodelpack.compress("tiny:1", quantize="fp16", example=torch.zeros(1, 1, 28, 28))
    status, body = await api("GET", "bundles")
    v2, v1 = body["bundles"][0]["versions"]
    assert v2["ref"] == "tiny:2" and "compressed" in v2["badges"] and "compressed" not in v1["badges"]
    assert v2["op"] == "compress" and v2["parent"] == parent.digest
    status, body = await api("GET", "bundles/tiny", params={"ref": "2"})
    lineage = body["detail"]["lineage"]
    assert [step["op"] for step in lineage] == ["pack", "compress"]
    assert lineage[-1]["parent"] == parent.digest and lineage[-1]["params"]["quantize"] == "fp16"
    assert lineage[-1]["parent_ref"] == "tiny:1"


async def test_encrypted_and_signed_versions_carry_their_badges_and_a_readable_card(api):
    _pack(description="secret weights")
    _, recipient = nbmodelpack.keygen_age()
    nbmodelpack.keygen_signing()
    nbmodelpack.encrypt("tiny:1", recipients=[recipient])
    nbmodelpack.sign("tiny:2")
    status, body = await api("GET", "bundles")
    badges = {v["ref"]: v["badges"] for v in body["bundles"][0]["versions"]}
    assert badges == {"tiny:3": ["encrypted", "signed"], "tiny:2": ["encrypted"], "tiny:1": []}
    assert {v["ref"]: v["encrypted"] for v in body["bundles"][0]["versions"]} == {"tiny:3": True, "tiny:2": True, "tiny:1": False}
    status, body = await api("GET", "bundles/tiny", params={"ref": "3"})
    assert status == 200 and "secret weights" in body["detail"]["card"]
    assert [step["op"] for step in body["detail"]["lineage"]] == ["pack", "encrypt", "sign"]


# ---- one error path, bounded bodies, optional extras ------------------------------------------
@pytest.mark.parametrize("opener", ["[", '{"a":'])
async def test_a_body_nested_ten_thousand_deep_is_a_one_line_400(api, opener):
    closer = "]" if opener == "[" else "}"
    status, body = await api("POST", "actions/tag", opener * 10_000 + "1" + closer * 10_000)
    assert status == 400 and body == {"error": "the request body is not JSON"}


async def test_an_oversized_action_body_is_refused_before_it_is_parsed(api):
    _pack()
    status, body = await api("POST", "actions/tag", {"ref": "tiny:1", "tag": "prod", "pad": "x" * 100_000})
    assert status == 400 and body["error"].startswith("the request body is too large")
    assert "prod" not in nbmodelpack.show("tiny:1").tags


async def test_a_bug_in_a_view_is_a_logged_one_line_500_without_a_traceback(api, monkeypatch):
    from nbmodelpack.labapi import views

    def broken(*args: Any) -> Any:
        raise KeyError("secret internals")

    monkeypatch.setattr(views, "remotes", broken)
    status, body = await api("GET", "remotes")
    assert status == 500 and body == {"error": "internal error: KeyError (see the Jupyter server log)"}


async def test_rest_errors_use_the_status_their_class_carries(api, monkeypatch):
    from nbmodelpack import errors
    from nbmodelpack.labapi import views

    for cls in (errors.CryptoError, errors.StoreError, errors.IntegrityError, errors.RemoteUnavailable):

        def fails(*args: Any, cls: type[errors.ModelPackError] = cls) -> Any:
            raise cls("one line", hint="do this")

        monkeypatch.setattr(views, "remotes", fails)
        status, body = await api("GET", "remotes")
        assert (status, body) == (cls.http_status, {"error": str(cls("one line", hint="do this"))})


@pytest.fixture
def without_serve_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as it is without the serve extra: starlette and uvicorn cannot be imported."""
    import sys

    import nbmodelpack.serving

    monkeypatch.setattr(nbmodelpack, "serving", nbmodelpack.serving)  # restored after the test
    for name in [m for m in sys.modules if m.startswith("nbmodelpack.serving.") and m.split(".")[-1] not in ("registry", "options")]:
        monkeypatch.delitem(sys.modules, name)
    for name in [m for m in sys.modules if m.split(".")[0] in ("starlette", "uvicorn")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.setitem(sys.modules, "uvicorn", None)


async def test_listing_works_without_the_serve_extra_and_serve_names_the_extra(api, without_serve_extra):
    _pack()
    jobs_before = len(JOBS.list())
    status, body = await api("GET", "bundles")
    assert status == 200 and [v["ref"] for v in body["bundles"][0]["versions"]] == ["tiny:1"]
    assert body["bundles"][0]["versions"][0]["serving"] is None
    status, body = await api("GET", "bundles/tiny")
    assert status == 200 and body["detail"]["ref"] == "tiny:1"
    status, body = await api("POST", "actions/serve", {"ref": "tiny:1"})
    assert status == 400 and body == {"error": "this needs the 'serve' extra: module 'starlette' is not installed (pip install 'nbmodelpack[serve]')"}
    assert len(JOBS.list()) == jobs_before  # refused at once, no job started


def test_the_rest_listing_imports_nothing_from_the_serve_extra(run_py):
    code = (
        "import sys\n"
        "for m in ('starlette', 'uvicorn', 'torch'): sys.modules[m] = None\n"
        "from nbmodelpack.labapi import views\n"
        "etag, payload = views.local_listing()\n"
        "print(payload['bundles'], sorted(m for m in sys.modules if m.startswith('nbmodelpack.serving')))\n"
    )
    out = run_py(code).stdout
    assert out.strip() == "[] ['nbmodelpack.serving', 'nbmodelpack.serving.registry']"


async def test_serving_a_bundle_that_cannot_be_loaded_fails_its_job_in_one_line(api, home):
    # The server's child process probes the bundle as a worker would (here: no key to decrypt it)
    # and exits with one line before any worker starts; that line is the job's error.
    import shutil

    _pack()
    _, recipient = nbmodelpack.keygen_age()
    nbmodelpack.encrypt("tiny:1", recipients=[recipient])
    shutil.rmtree(home / "keys")
    status, body = await api("POST", "actions/serve", {"ref": "tiny:2"})
    assert status == 202
    job = await asyncio.to_thread(JOBS.wait, body["job"]["id"], 120)
    assert job.state == "error" and job.error and "\n" not in job.error
    assert job.error.startswith("serve: the server exited: decryption: model.safetensors is encrypted and no age identity"), job.error
    assert nbmodelpack.servers() == []


async def test_jobs_beyond_the_pending_limit_are_refused_not_queued(api):
    import threading

    from nbmodelpack.labapi.jobs import MAX_PENDING, Jobs

    jobs, release = Jobs(workers=1), threading.Event()
    try:
        for _ in range(MAX_PENDING):
            jobs.submit("publish", "tiny:1", lambda: release.wait(10))
        with pytest.raises(nbmodelpack.errors.UsageError, match="already waiting or running"):
            jobs.submit("publish", "tiny:1", lambda: None)
    finally:
        release.set()
    last = jobs.list()[0]
    assert (await asyncio.to_thread(jobs.wait, last.id)).state == "done"
    assert jobs.submit("publish", "tiny:1", lambda: "ok") is not None


async def test_serving_an_encrypted_bundle_with_the_key_file_the_sidebar_names(api, home, tmp_path):
    import shutil

    import nbmodelpack.serving

    _pack()
    key, recipient = nbmodelpack.keygen_age(tmp_path / "my-key.txt")
    nbmodelpack.encrypt("tiny:1", recipients=[recipient])
    shutil.rmtree(home / "keys", ignore_errors=True)
    status, body = await api("POST", "actions/serve", {"ref": "tiny:2", "identity": str(key)})
    assert status == 202
    job = await asyncio.to_thread(JOBS.wait, body["job"]["id"], 120)
    try:
        assert job.state == "done", job.error
        assert job.result["url"].startswith("http://127.0.0.1:")
    finally:
        with contextlib.suppress(nbmodelpack.errors.ModelPackError):
            nbmodelpack.serving.stop_server("all")


async def test_a_non_string_identity_is_refused_at_once(api):
    _pack()
    status, body = await api("POST", "actions/serve", {"ref": "tiny:1", "identity": 7})
    assert status == 400 and body["error"].startswith("field 'identity' must be a string")
