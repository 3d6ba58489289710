"""Publish and pull against a REAL registry (Debian's docker-registry, htpasswd auth) and file:// remotes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import torch

from nbmodelpack import api, remote
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.errors import AuthError, BundleNotFound, IntegrityError, RemoteUnavailable
from nbmodelpack.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from registry_server import Registry, free_port, running_registry  # noqa: E402

pytestmark = pytest.mark.e2e
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "modelpack-config-schema.json"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(autouse=True)
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Credentials go to a per-test DOCKER_CONFIG, never the user's ~/.docker."""
    d = tmp_path / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    return d / "config.json"


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    """A registry namespace of this test's own, so tests never see each other's repositories."""
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:60].strip("-")


@pytest.fixture
def team(registry: Registry, namespace: str) -> remote.Remote:
    """Remote ``team`` on the test registry, logged in."""
    remote.add_remote("team", f"oci://{registry.host}/{namespace}", insecure=True)
    remote.login("team", registry.user, registry.password)
    return remote.get_remote("team")


def random_bundle(name: str = "blobby", size: int = 200_000, *, store: Store | None = None) -> str:
    """A bundle whose weights are random bytes (no torch needed); returns its ref."""
    s = store or api.get_store()
    weights = s.put_layer("model.safetensors", mt.WEIGHT, os.urandom(size))
    extra = s.put_layer("signature.json", mt.WEIGHT_CONFIG, json.dumps({"inputs": [name]}).encode())
    return s.commit(Draft(name=name, layers=[weights, extra], recipe={"op": "pack"}, description=f"{name} test bundle", metrics={"accuracy": 0.5})).ref


def sharded_bundle(sizes: list[int], name: str = "shards") -> str:
    """A bundle whose weights are shard layers of ``sizes`` random bytes; returns its ref."""
    s, n = api.get_store(), len(sizes)
    layers = [s.put_layer(f"model-{i + 1:05d}-of-{n:05d}.safetensors", mt.WEIGHT, os.urandom(size)) for i, size in enumerate(sizes)]
    return s.commit(Draft(name=name, layers=layers, recipe={"op": "pack"})).ref


def packed_mlp(name: str = "mlp") -> tuple[str, torch.nn.Module, torch.Tensor]:
    from models import MLP

    torch.manual_seed(0)
    model = MLP(hidden=16).eval()
    x = torch.randn(4, 1, 28, 28)
    info = api.pack(model, name, example=x[:1], metrics={"accuracy": 0.91}, description="tiny MLP")
    return info.ref, model, x


def blob_writes(reqs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(m, u) for m, u in reqs if "/blobs/uploads" in u]


def fresh_store(tmp_path: Path) -> Store:
    return Store(tmp_path / "fresh-store")


def store_files(s: Store) -> list[str]:
    return sorted(str(p.relative_to(s.root)) for p in s.root.rglob("*") if p.is_file() and p.name != ".lock")


# ---- registry: push, pull, tags ------------------------------------------------------------
def test_publish_sends_the_exact_manifest_and_tags_then_pull_loads_the_same_model(team: remote.Remote, registry: Registry, tmp_path: Path) -> None:
    ref, model, x = packed_mlp()
    local = api.show(ref)
    result = remote.publish(ref, "team", tag="prod")
    assert result.tags == ["1", "latest", "prod"]
    assert result.blobs_sent == len(local.layers) + 1
    assert sorted(remote.open_transport(team).tags(team.repository("mlp"))) == ["1", "latest", "prod"]
    for t in ("1", "latest", "prod"):
        raw, digest = remote.open_transport(team).get_manifest(team.repository("mlp"), t)
        assert digest == local.digest
        assert raw == api.get_store().read_blob(local.digest)
    assert api.show(ref).published == ["team/mlp:1"]

    fresh = fresh_store(tmp_path)
    pulled = remote.pull("team/mlp:prod", store=fresh)
    assert (pulled.ref, pulled.digest) == ("mlp:1", local.digest)
    assert sorted(pulled.tags) == ["1", "latest", "prod"]
    loaded = api.load("mlp:1", store=fresh)
    assert torch.equal(loaded(x), model(x))
    assert api.fsck(store=fresh) == []


def test_a_sharded_bundle_publishes_every_shard_and_pulls_back_loading_the_same_model(team: remote.Remote, registry: Registry, tmp_path: Path) -> None:
    from models import MLP

    torch.manual_seed(0)
    model = MLP(hidden=32).eval()
    x = torch.randn(4, 1, 28, 28)
    info = api.pack(model, "sharded", example=x[:1], shard_size=50_000)
    assert len(api.get_store().open(info.ref).weight_files()) == 2
    result = remote.publish(info.ref, "team")
    assert result.blobs_sent == len(info.layers) + 1
    fresh = fresh_store(tmp_path)
    pulled = remote.pull("team/sharded:1", store=fresh)
    assert pulled.digest == info.digest
    assert fresh.open(pulled.ref).weight_files() == api.get_store().open(info.ref).weight_files()
    assert torch.equal(api.load(pulled.ref, store=fresh)(x), model(x))
    assert api.fsck(store=fresh) == []


def test_pull_by_host_reference_and_digest_works_without_a_named_remote(team: remote.Remote, registry: Registry, tmp_path: Path) -> None:
    ref = random_bundle()
    digest = api.show(ref).digest
    remote.publish(ref, "team")
    fresh = fresh_store(tmp_path)
    info = remote.pull(f"{registry.host}/{team.namespace}/blobby@{digest}", store=fresh, as_name="copy")
    assert (info.name, info.version, info.digest) == ("copy", 1, digest)


def test_republishing_an_unchanged_bundle_uploads_no_blob(team: remote.Remote, registry: Registry) -> None:
    ref = random_bundle(size=3_000_000)
    first = remote.publish(ref, "team")
    assert first.blobs_sent == 4 and first.bytes_sent > 3_000_000
    mark = registry.log_mark()
    t0 = time.perf_counter()
    again = remote.publish(ref, "team")
    elapsed = time.perf_counter() - t0
    reqs = registry.requests_since(mark)
    assert (again.blobs_sent, again.bytes_sent, again.blobs_skipped) == (0, 0, 4)
    assert blob_writes(reqs) == [], reqs
    assert [m for m, _ in reqs if m == "HEAD"] and elapsed < 1.0


def test_a_new_name_with_the_same_weights_mounts_them_instead_of_uploading(team: remote.Remote, registry: Registry) -> None:
    s = api.get_store()
    ref = random_bundle("first", size=1_000_000)
    remote.publish(ref, "team")
    weights = s.open(ref).descriptor("model.safetensors")
    second = s.commit(Draft(name="second", layers=[weights], recipe={"op": "pack"})).ref
    mark = registry.log_mark()
    result = remote.publish(second, "team")
    reqs = registry.requests_since(mark)
    assert result.blobs_mounted == 1
    assert any(m == "POST" and f"mount={weights.digest.replace(':', '%3A')}" in u for m, u in reqs), reqs
    assert not any(m in ("PATCH",) for m, _ in reqs)
    assert result.bytes_sent < 10_000  # config and card only


def test_chunked_upload_sends_patch_requests_with_content_range(team: remote.Remote, registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NBMODELPACK_CHUNK_SIZE", str(256 << 10))
    ref = random_bundle(size=3 << 20)
    mark = registry.log_mark()
    remote.publish(ref, "team")
    patches = [u for m, u in registry.requests_since(mark) if m == "PATCH"]
    assert len(patches) == 12  # 3 MiB in 256 KiB chunks
    info = remote.pull("team/blobby:1", store=fresh_store(tmp_path))
    assert info.digest == api.show(ref).digest


def test_ls_remote_lists_versions_with_card_metadata_reading_no_blob(team: remote.Remote, registry: Registry, cli) -> None:
    remote.publish(random_bundle("alpha"), "team")
    ref2 = random_bundle("alpha")
    remote.publish(ref2, "team", tag="prod")
    remote.publish(random_bundle("beta"), "team")
    mark = registry.log_mark()
    infos = remote.list_remote("team")
    reqs = registry.requests_since(mark)
    assert [(i.ref, sorted(i.tags)) for i in infos] == [
        ("team/alpha:2", ["2", "latest", "prod"]),
        ("team/alpha:1", ["1"]),
        ("team/beta:1", ["1", "latest"]),
    ]
    assert all(i.remote == "team" and i.metrics == {"accuracy": 0.5} and i.description.endswith("test bundle") for i in infos)
    assert not [u for m, u in reqs if "/blobs/" in u], "listing must read manifests only"
    proc = cli("ls", "--remote", "team", "--json", check=True)
    assert [d["ref"] for d in json.loads(proc.stdout)] == ["team/alpha:2", "team/alpha:1", "team/beta:1"]


# ---- errors --------------------------------------------------------------------------------
def test_publish_without_login_says_to_log_in(registry: Registry, namespace: str, cli) -> None:
    remote.add_remote("team", f"oci://{registry.host}/{namespace}", insecure=True)
    ref = random_bundle()
    with pytest.raises(AuthError, match="needs a login"):
        remote.publish(ref, "team")
    proc = cli("publish", ref, "--to", "team")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: remote: {registry.host} needs a login (run `modelpack login team`)"]


def test_wrong_password_is_refused_and_nothing_is_saved(registry: Registry, namespace: str, docker_config: Path, cli) -> None:
    remote.add_remote("team", f"oci://{registry.host}/{namespace}", insecure=True)
    with pytest.raises(AuthError, match="wrong username or password"):
        remote.login("team", registry.user, "not-the-password")
    assert not docker_config.exists()
    proc = subprocess.run(
        [sys.executable, "-m", "nbmodelpack", "login", "team", "-u", registry.user, "--password-stdin"],
        input="nope\n", capture_output=True, text=True, env=os.environ.copy(), timeout=60,
    )
    assert proc.returncode == 1 and "wrong username or password" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "nbmodelpack", "login", "team", "-u", registry.user, "--password-stdin"],
        input=registry.password + "\n", capture_output=True, text=True, env=os.environ.copy(), timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(docker_config.read_text())["auths"][registry.host]["auth"]
    import base64

    assert base64.b64decode(saved).decode() == f"{registry.user}:{registry.password}"
    assert oct(docker_config.stat().st_mode & 0o777) == "0o600"


def test_credentials_written_by_skopeo_login_are_used(registry: Registry, namespace: str, docker_config: Path) -> None:
    docker_config.parent.mkdir(parents=True)
    subprocess.run(
        ["skopeo", "login", "--tls-verify=false", "--authfile", str(docker_config), "-u", registry.user, "--password-stdin", registry.host],
        input=registry.password, check=True, capture_output=True, text=True, timeout=60,
    )
    remote.add_remote("team", f"oci://{registry.host}/{namespace}", insecure=True)
    assert remote.publish(random_bundle(), "team").blobs_sent == 4


def test_registry_down_is_a_clear_error(cli) -> None:
    remote.add_remote("gone", f"oci://127.0.0.1:{free_port()}/x", insecure=True)
    ref = random_bundle()
    with pytest.raises(RemoteUnavailable, match="cannot reach"):
        remote.publish(ref, "gone")
    t0 = time.time()
    proc = cli("pull", "gone/blobby:1")
    assert proc.returncode == 1 and time.time() - t0 < 30
    assert proc.stderr.strip().splitlines() == [f"error: remote: cannot reach {remote.get_remote('gone').host} (is the registry running and the URL right? see `modelpack remote ls`)"]


def test_pulling_a_missing_tag_is_bundle_not_found(team: remote.Remote, tmp_path: Path) -> None:
    remote.publish(random_bundle(), "team")
    with pytest.raises(BundleNotFound, match="team/"):
        remote.pull("team/blobby:7", store=fresh_store(tmp_path))


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_manifest_corrupted_on_the_registry_is_refused_and_nothing_is_written(team: remote.Remote, registry: Registry, tmp_path: Path) -> None:
    ref = random_bundle()
    remote.publish(ref, "team")
    # still valid JSON (the registry parses it), one description changed: only the digest can tell
    data = registry.blob_data(api.show(ref).digest)
    data.write_bytes(data.read_bytes().replace(b"blobby test bundle", b"blobby evil bundle"))
    fresh = fresh_store(tmp_path)
    before = store_files(fresh)
    with pytest.raises(IntegrityError, match="manifest"):
        remote.pull("team/blobby:1", store=fresh)
    assert store_files(fresh) == before
    with pytest.raises(IntegrityError):  # the listing skips it rather than show damaged data
        remote.open_transport(team).get_manifest(team.repository("blobby"), "latest")


def test_a_blob_corrupted_on_the_registry_is_refused_and_nothing_is_written(team: remote.Remote, registry: Registry, tmp_path: Path) -> None:
    ref = random_bundle(size=2_000_000)
    remote.publish(ref, "team")
    weights = api.get_store().open(ref).descriptor("model.safetensors")
    _flip(registry.blob_data(weights.digest))
    fresh = fresh_store(tmp_path)
    before = store_files(fresh)
    with pytest.raises(IntegrityError, match="model.safetensors"):
        remote.pull("team/blobby:1", store=fresh)
    assert store_files(fresh) == before
    assert api.ls(store=fresh) == []
    env = dict(os.environ, NBMODELPACK_HOME=str(tmp_path / "other-home"), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "nbmodelpack", "pull", f"{team.host}/{team.repository('blobby')}:1"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("error: integrity check failed: model.safetensors")


def test_a_push_killed_mid_upload_resends_only_the_unfinished_shard_and_resumes_it(team: remote.Remote, registry: Registry, home: Path, cli) -> None:
    size = 48 << 20
    ref = sharded_bundle([size, 6 << 20])
    bundle = api.get_store().open(ref)
    big, small = (bundle.descriptor(f"model-0000{i}-of-00002.safetensors") for i in (1, 2))
    digests = [d.digest for d in bundle.manifest.layers] + [bundle.manifest.config.digest]
    env = dict(os.environ, NBMODELPACK_CHUNK_SIZE=str(1 << 20), PYTHONPATH=os.pathsep.join(sys.path))
    mark = registry.log_mark()
    proc = subprocess.Popen([sys.executable, "-m", "nbmodelpack", "publish", ref, "--to", "team"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    uploads = home / "uploads"
    deadline = time.time() + 60
    killed_at = 0
    while time.time() < deadline and proc.poll() is None:
        states = [json.loads(p.read_text()) for p in uploads.glob("*.json")] if uploads.exists() else []
        offsets = [st["offset"] for st in states if st["digest"] == big.digest]
        if offsets and offsets[0] >= size // 3:
            proc.send_signal(signal.SIGKILL)
            killed_at = offsets[0]
            break
        time.sleep(0.005)
    proc.wait()
    assert killed_at, "the push finished before it could be killed"
    first = registry.requests_since(mark)
    # both shards went up at once: the small one finished before the kill, the big one did not
    finished_first = {d for d in digests if any(m == "PUT" and d.replace(":", "%3A") in u for m, u in first)}
    assert small.digest in finished_first and big.digest not in finished_first

    mark2 = registry.log_mark()
    again = cli("publish", ref, "--to", "team", "--json", check=True)
    result = json.loads(again.stdout)
    answers = registry.answers_since(mark2)
    second = [(m, u) for m, u, _ in answers]
    assert result["blobs_sent"] == len(digests) - len(finished_first)
    for d in digests:  # no finished blob went up twice
        puts = [u for m, u in first + second if m == "PUT" and d.replace(":", "%3A") in u]
        assert len(puts) == 1, (d, puts)
    # The re-run first asks the registry where the interrupted upload stands (GET on its URL).
    status = [code for m, u, code in answers if m == "GET" and "/blobs/uploads/" in u]
    assert len(status) == 1, answers
    if status[0] == 204:  # killed between two chunks: it resumes at the registry's offset
        assert result["bytes_sent"] <= size - killed_at + (1 << 20), "the upload restarted from zero"
        assert not [u for m, u in second if m == "POST"], "the resumed upload must not open a new session"
    else:
        # Killed inside a PATCH: docker-registry 2.8 then finds more bytes than its signed
        # upload state says and cancels the session; only that blob starts over.
        assert [u for m, u in second if m == "POST"], answers
    assert not list(uploads.glob("*.json"))
    fresh = Store(home / "check")
    assert remote.pull("team/shards:1", store=fresh).digest == api.show(ref).digest


def test_a_pull_killed_half_way_keeps_the_verified_shard_and_the_next_pull_fetches_only_the_rest(team: remote.Remote, registry: Registry, tmp_path: Path) -> None:
    ref = sharded_bundle([192 << 20, 4 << 20])
    bundle = api.get_store().open(ref)
    big, small = (bundle.descriptor(f"model-0000{i}-of-00002.safetensors") for i in (1, 2))
    remote.publish(ref, "team")
    other = tmp_path / "other-home"
    blobs = other / "store" / "blobs" / "sha256"
    source = f"{team.host}/{team.repository('shards')}:1"
    env = dict(os.environ, NBMODELPACK_HOME=str(other), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "nbmodelpack", "pull", source], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if (blobs / small.digest.split(":")[1]).exists():  # both shards come at once; the small one is in
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the pull finished before it could be killed"
    local = Store(other / "store")
    assert local.has_blob(small.digest) and not local.has_blob(big.digest) and local.list() == []

    mark = registry.log_mark()
    assert remote.pull(source, store=local).digest == bundle.digest
    fetched = [u for m, u in registry.requests_since(mark) if m == "GET" and "/blobs/sha256:" in u]
    assert any(big.digest in u for u in fetched) and not any(small.digest in u for u in fetched), fetched
    local.gc(grace_seconds=0)  # what the killed pull was writing goes; the version stays whole
    assert not list(blobs.glob(".tmp-*")) and local.fsck() == []


@pytest.mark.parametrize("size", [200_000, 3 << 20], ids=["one-request", "chunked"])
def test_publishing_a_shard_changed_in_the_local_store_is_one_integrity_line(team: remote.Remote, registry: Registry, cli, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = sharded_bundle([size])
    path = api.get_store().blob_path(api.get_store().open(ref).descriptor("model-00001-of-00001.safetensors").digest)
    path.chmod(0o644)
    _flip(path)  # pushing does not re-hash: the registry's digest check catches it
    monkeypatch.setenv("NBMODELPACK_CHUNK_SIZE", str(1 << 20))
    proc = cli("publish", ref, "--to", "team")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: integrity check failed: model-00001-of-00001.safetensors in the local store does not match")
    assert "fsck" in proc.stderr


def test_a_push_stopped_with_ctrl_c_resumes_at_the_registry_offset(team: remote.Remote, registry: Registry, home: Path, cli) -> None:
    size, chunk = 48 << 20, 1 << 20
    ref = random_bundle(size=size)
    env = dict(os.environ, NBMODELPACK_CHUNK_SIZE=str(chunk), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "nbmodelpack", "publish", ref, "--to", "team"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    uploads = home / "uploads"
    deadline = time.time() + 60
    interrupted_at = 0
    while time.time() < deadline and proc.poll() is None:
        states = [json.loads(p.read_text()) for p in uploads.glob("*.json")] if uploads.exists() else []
        if states and states[0]["offset"] >= size // 3:
            proc.send_signal(signal.SIGINT)  # what a notebook's interrupt button sends
            interrupted_at = states[0]["offset"]
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=60)
    assert interrupted_at, "the push finished before it could be interrupted"
    assert proc.returncode == 130 and b"Traceback" not in err, err
    mark = registry.log_mark()
    result = json.loads(cli("publish", ref, "--to", "team", "--json", check=True).stdout)
    answers = registry.answers_since(mark)
    # The workers stopped at a chunk boundary, so docker-registry kept the session: no upload restarts.
    assert [code for m, u, code in answers if m == "GET" and "/blobs/uploads/" in u] == [204], answers
    assert not [u for m, u, _ in answers if m == "POST"], "the resumed upload must not open a new session"
    assert result["bytes_sent"] <= size - interrupted_at + chunk
    assert remote.pull("team/blobby:1", store=Store(home / "check")).digest == api.show(ref).digest


def test_an_upload_interrupted_between_chunks_resumes_at_the_registry_offset(team: remote.Remote, registry: Registry, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    chunk = 256 << 10
    monkeypatch.setenv("NBMODELPACK_CHUNK_SIZE", str(chunk))
    ref = random_bundle(size=4 << 20)
    weights = api.get_store().open(ref).descriptor("model.safetensors")
    transport = remote.open_transport(team)
    sent: list[int] = []

    def interrupt_after_five_chunks(n: int) -> None:
        sent.append(n)
        if len(sent) == 5:
            raise KeyboardInterrupt  # like Ctrl-C in the notebook, after the 5th chunk was accepted
    with pytest.raises(KeyboardInterrupt):
        transport.put_blob(team.repository("blobby"), weights, api.get_store().blob_path(weights.digest), interrupt_after_five_chunks)
    assert len(list((home / "uploads").glob("*.json"))) == 1
    mark = registry.log_mark()
    result = remote.publish(ref, "team")
    answers = registry.answers_since(mark)
    assert result.bytes_sent == weights.size - 5 * chunk + sum(d.size for d in api.get_store().open(ref).manifest.layers if d.digest != weights.digest) + api.get_store().open(ref).manifest.config.size
    assert [code for m, u, code in answers if m == "GET" and "/blobs/uploads/" in u] == [204]
    assert len([u for m, u, _ in answers if m == "PATCH"]) == 16 - 5
    assert remote.pull("team/blobby:1", store=Store(home / "check")).digest == api.show(ref).digest


# ---- interop with skopeo -------------------------------------------------------------------
def test_skopeo_pulls_what_we_publish_and_its_config_validates_against_the_modelpack_schema(team: remote.Remote, registry: Registry, tmp_path: Path) -> None:
    ref, _, _ = packed_mlp()
    local = api.get_store().open(ref)
    remote.publish(ref, "team")
    out = tmp_path / "skopeo-oci"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"--src-creds={registry.user}:{registry.password}",
         f"docker://{registry.host}/{team.repository('mlp')}:1", f"oci:{out}:1"],
        check=True, capture_output=True, text=True, timeout=120,
    )
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == local.digest
    layout = Store(out, create=False)
    config = json.loads(layout.read_blob(local.manifest.config.digest))
    jsonschema.validate(config, json.loads(SCHEMA.read_text()))
    for d in local.manifest.layers:
        layout.read_blob(d.digest, what=d.filepath)  # verifies the bytes


def test_we_pull_and_load_what_skopeo_pushed_from_our_exported_layout(team: remote.Remote, registry: Registry, tmp_path: Path) -> None:
    ref, model, x = packed_mlp("viaskopeo")
    layout = tmp_path / "layout"
    api.export(ref, layout, format="dir")
    subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", f"--dest-creds={registry.user}:{registry.password}",
         f"oci:{layout}:viaskopeo:1", f"docker://{registry.host}/{team.repository('viaskopeo')}:1"],
        check=True, capture_output=True, text=True, timeout=120,
    )
    fresh = fresh_store(tmp_path)
    info = remote.pull("team/viaskopeo:1", store=fresh)
    assert info.digest == api.show(ref).digest
    assert torch.equal(api.load("viaskopeo:1", store=fresh)(x), model(x))


# ---- file:// remotes (no registry) ---------------------------------------------------------
def test_file_remote_publish_list_pull_through_the_cli(tmp_path: Path, cli) -> None:
    ref, model, x = packed_mlp()
    share = tmp_path / "share"
    assert cli("remote", "add", "share", f"file://{share}", check=True).stdout.startswith("added remote share")
    assert "share  file://" in cli("remote", "ls", check=True).stdout
    out = cli("publish", ref, "--tag", "prod", check=True).stdout  # the only remote is the default
    assert "tags 1, latest, prod" in out
    again = json.loads(cli("publish", ref, "--to", "share", "--json", check=True).stdout)
    assert again["blobs_sent"] == 0
    listed = json.loads(cli("ls", "--remote", "share", "--json", check=True).stdout)
    assert [(d["ref"], d["remote"], d["metrics"]) for d in listed] == [("share/mlp:1", "share", {"accuracy": 0.91})]
    assert json.loads(cli("ls", "--json", check=True).stdout)[0]["published"] == ["share/mlp:1"]

    fresh = fresh_store(tmp_path)
    info = remote.pull("share/mlp:1", store=fresh)
    assert info.digest == api.show(ref).digest
    assert torch.equal(api.load("mlp", store=fresh)(x), model(x))
    assert cli("remote", "rm", "share", check=True).stdout.startswith("removed remote share")
    assert "no remotes" in cli("remote", "ls", check=True).stdout


def test_file_remote_with_a_damaged_blob_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    share = tmp_path / "share"
    remote.add_remote("share", f"file://{share}")
    ref = random_bundle()
    remote.publish(ref, "share")
    weights = api.get_store().open(ref).descriptor("model.safetensors")
    _flip(Store(share).blob_path(weights.digest))
    fresh = fresh_store(tmp_path)
    before = store_files(fresh)
    with pytest.raises(IntegrityError, match="model.safetensors"):
        remote.pull("share/blobby:1", store=fresh)
    assert store_files(fresh) == before


def test_pull_onto_a_full_disk_says_so_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    share = tmp_path / "share"
    remote.add_remote("share", f"file://{share}")
    remote.publish(random_bundle(size=16 << 20), "share")
    api.rm("blobby:1")
    api.gc(grace_seconds=0)
    before = store_files(api.get_store())
    # RLIMIT_FSIZE makes writes past 4 MB fail (EFBIG), as a full disk would.
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20));"
        "from nbmodelpack.cli import main; sys.exit(main(['pull', 'share/blobby:1']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: store error: disk full while writing") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert store_files(api.get_store()) == before
    assert api.ls() == []


def test_pull_refuses_to_overwrite_a_different_local_version(tmp_path: Path) -> None:
    remote.add_remote("share", f"file://{tmp_path / 'share'}")
    other = Store(tmp_path / "other")
    remote.publish(random_bundle(store=other), "share", store=other)
    random_bundle()  # a different local blobby:1
    with pytest.raises(Exception, match="different bundle"):
        remote.pull("share/blobby:1")
    assert remote.pull("share/blobby:1", as_name="theirs").ref == "theirs:1"


def test_remote_urls_are_checked(cli) -> None:
    proc = cli("remote", "add", "x", "http://example.com/foo")
    assert proc.returncode == 2 and "oci://HOST[:PORT]/NAMESPACE" in proc.stderr
    proc = cli("publish", "nothing:1")
    assert proc.returncode == 2 and "no remote is configured" in proc.stderr


def test_registry_fixture_requires_auth(registry: Registry) -> None:
    import requests

    assert requests.get(f"{registry.url}/v2/", timeout=5).status_code == 401


def test_an_unauthenticated_registry_works_without_login(tmp_path: Path) -> None:
    with running_registry(tmp_path / "open", auth=False) as reg:
        remote.add_remote("open", f"oci://{reg.host}/ns", insecure=True)
        ref = random_bundle()
        assert remote.publish(ref, "open").blobs_sent == 4
        assert remote.pull("open/blobby:1", store=fresh_store(tmp_path)).digest == api.show(ref).digest


# ---- the tutorial --------------------------------------------------------------------------
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "04-publish-and-serve.ipynb"


def _run_notebook(env: dict[str, str]) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "same digest: True" in text
    assert "JSON:" in text and "PNG: " in text  # the serve half answered /predict both ways


def test_publish_notebook_runs_top_to_bottom_against_the_registry(registry: Registry, namespace: str) -> None:
    # The file:// branch (the default without a registry) is what `make demo` and the CLI test run.
    _run_notebook({
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "NBMODELPACK_TEST_REGISTRY": f"oci://{registry.host}/{namespace}",
        "NBMODELPACK_TEST_REGISTRY_USER": registry.user,
        "NBMODELPACK_TEST_REGISTRY_PASSWORD": registry.password,
    })
    published = api.show("mnist-mlp:latest").published
    assert published == ["team/mnist-mlp:1"]


def test_bearer_token_auth_is_answered_like_the_distribution_spec_says(tmp_path: Path, docker_config: Path) -> None:
    with running_registry(tmp_path / "token-registry", auth="token") as reg:
        remote.add_remote("tok", f"oci://{reg.host}/ns", insecure=True)
        ref = random_bundle()
        with pytest.raises(AuthError, match="needs a login|refused"):
            remote.publish(ref, "tok")
        with pytest.raises(AuthError, match="wrong username or password"):
            remote.login("tok", reg.user, "wrong")
        remote.login("tok", reg.user, reg.password)
        assert remote.publish(ref, "tok").blobs_sent == 4
        assert [i.ref for i in remote.list_remote("tok")] == ["tok/blobby:1"]
        assert remote.pull("tok/blobby:1", store=fresh_store(tmp_path)).digest == api.show(ref).digest
