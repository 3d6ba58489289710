"""KServe from the registry: manifests checked against KServe's schemas, the storage initializer and
the runtime run here as the pod would run them (same commands, same environment), against a real
registry."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import torch
import yaml
from conftest import subprocess_env
from processes import running

import nbmodelpack
from nbmodelpack import remote
from nbmodelpack.serving import kserve
from nbmodelpack.serving.containerize import kserve_context

sys.path.insert(0, str(Path(__file__).parent))
from registry_server import Registry, running_registry  # noqa: E402

pytestmark = pytest.mark.e2e
SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "kserve"
# Kubernetes' rule for names KServe turns into Services (DNS-1035 label); its webhook applies it.
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
TOKEN = "kserve-test-token"


def _validate(doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, json.loads((SCHEMAS / f"{doc['kind']}.schema.json").read_text()))


@pytest.mark.parametrize("name", ["3d_unet.v2", "mnist-mlp", "a__b..c", "x" * 80, "9"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_kserve_manifests_fit_kserve_schemas_and_naming_for_awkward_bundle_names(name: str, encrypted: bool) -> None:
    uri = f"modelpack://registry.example.com:5000/team/{name}@sha256:" + "ab" * 32
    docs = yaml.safe_load_all(kserve.manifest_text(name=name, uri=uri, image="modelpack-runtime:1", encrypted=encrypted))
    storage, runtime, service = docs
    for doc in (storage, runtime, service):
        _validate(doc)
    isvc = service["metadata"]["name"]
    assert DNS_1035.fullmatch(isvc) and len(isvc) <= 45
    assert storage["spec"]["container"]["name"] == "storage-initializer"
    assert storage["spec"]["supportedUriFormats"] == [{"prefix": "modelpack://"}]
    model = service["spec"]["predictor"]["model"]
    assert model["storageUri"] == uri and model["runtime"] == runtime["metadata"]["name"]
    args = runtime["spec"]["containers"][0]["args"]
    assert args[args.index("--model-name") + 1] == "{{.Name}}"  # KServe puts the InferenceService name there
    assert ("volumes" in service["spec"]["predictor"]) is encrypted


def test_kserve_schemas_refuse_a_misspelt_field_and_a_missing_predictor() -> None:
    uri = "modelpack://r.example/x@sha256:" + "0" * 64
    service = kserve.manifests(name="x", uri=uri, image="i")[2]
    service["spec"]["predictor"]["model"]["storageURI"] = uri
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        _validate(service)
    with pytest.raises(jsonschema.ValidationError, match="predictor"):
        _validate({**service, "spec": {}})


def test_storage_uri_must_name_a_digest() -> None:
    with pytest.raises(nbmodelpack.errors.UsageError, match="not a modelpack storage URI"):
        kserve.parse_storage_uri("modelpack://r.example/team/x:latest")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def _pod_env(env: list[dict[str, Any]], paths: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """A container's env entries (Secret references given by ``secrets``), pod paths mapped to this test's."""
    out = {}
    for entry in env:
        value = entry["value"] if "value" in entry else secrets[entry["valueFrom"]["secretKeyRef"]["name"]]
        for pod, here in paths.items():
            value = value.replace(pod, here)
        out[entry["name"]] = value
    return out


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_kserve_names_the_local_versions_own_digest_and_a_remote_digest_must_answer_with_itself(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from nbmodelpack.errors import IntegrityError
    from nbmodelpack.remote.registry_transport import RegistryTransport

    remote.add_remote("team", f"oci://{registry.host}/kserve-tags", insecure=True)
    remote.login("team", registry.user, registry.password)
    torch.manual_seed(0)
    first = nbmodelpack.pack(torch.nn.Linear(4, 2), "tagged", example=torch.randn(1, 4))
    nbmodelpack.publish(first.ref, "team")
    theirs = str(tmp_path / "colleague-store")  # a colleague publishes their own tagged:1 over ours
    second = nbmodelpack.pack(torch.nn.Linear(4, 3), "tagged", example=torch.randn(1, 4), store=theirs)
    nbmodelpack.publish(second.ref, "team", store=theirs)
    assert second.ref == first.ref and second.digest != first.digest
    assert kserve.published_uri(first.ref)[1].endswith("@" + first.digest)
    real = RegistryTransport.get_manifest
    monkeypatch.setattr(RegistryTransport, "get_manifest", lambda self, repo, reference: real(self, repo, second.digest))
    with pytest.raises(IntegrityError, match="answered with another manifest"):
        kserve.published_uri(f"team/tagged@{first.digest}")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_storage_initializer_fills_mnt_models_from_the_registry_and_the_runtime_serves_it_as_the_isvc(
    registry: Registry, tmp_path: Path, encrypted: bool
) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)).eval()
    x = torch.randn(2, 1, 28, 28)
    ref = nbmodelpack.pack(model, "3d_unet.v2", example=x[:1]).ref
    key_file = tmp_path / "keys" / kserve.KEY_FILE
    if encrypted:
        _, recipient = nbmodelpack.keygen_age(key_file)
        ref = nbmodelpack.encrypt(ref, recipients=[recipient]).ref
    remote.add_remote("team", f"oci://{registry.host}/kserve-{'enc' if encrypted else 'plain'}", insecure=True)
    remote.login("team", registry.user, registry.password)
    nbmodelpack.publish(ref, "team")

    ctx = kserve_context(ref, tmp_path / "ctx")
    storage, runtime, service = yaml.safe_load_all((ctx / "kserve.yaml").read_text())
    for doc in (storage, runtime, service):
        _validate(doc)
    isvc = service["metadata"]["name"]
    assert isvc == "m-3d-unet-v2"
    uri = service["spec"]["predictor"]["model"]["storageUri"]
    assert uri.startswith(f"modelpack://{registry.host}/kserve-") and "@sha256:" in uri

    # The storage initializer: KServe runs the container's command with [storageUri, /mnt/models];
    # registry credentials come from the docker-registry Secret as DOCKER_AUTH_CONFIG.
    mnt = tmp_path / "mnt-models"
    mnt.mkdir()
    paths = {kserve.MOUNT: str(mnt), "/tmp/modelpack": str(tmp_path / "pod-home"), kserve.KEY_DIR: str(key_file.parent)}
    launcher = [sys.executable, str(ctx / "bin" / "modelpack")]
    auth = base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
    secrets = {"modelpack-registry": json.dumps({"auths": {registry.host: {"auth": auth}}}), f"{isvc}-token": TOKEN}
    init = storage["spec"]["container"]
    env = subprocess_env(**_pod_env(init["env"], paths, secrets), PYTHONPATH=str(ctx / "src"))
    done = subprocess.run([*launcher, *init["command"][1:], uri, str(mnt)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (mnt / "store" / "index.json").exists() and not list((mnt / "store").glob("*.pt2"))
    before = _snapshot(mnt)

    # The runtime, with the InferenceService's env (token and key from their Secrets).
    container = runtime["spec"]["containers"][0]
    args = [a.replace("{{.Name}}", isvc) for a in container["args"]]
    args[args.index("--host") + 1] = "127.0.0.1"  # loopback only in tests
    args[args.index("--port") + 1] = "0"
    pod_env = [*container["env"], *service["spec"]["predictor"]["model"]["env"]]
    env = subprocess_env(**_pod_env(pod_env, paths, secrets), PYTHONPATH=str(ctx / "src"))
    server_home = tmp_path / "pod-home"

    def ready(proc: subprocess.Popen[bytes]) -> bool:
        entry = server_home / "servers" / f"{proc.pid}.json"
        return entry.exists() and requests.get(json.loads(entry.read_text())["url"] + "/v2/health/ready", timeout=5).status_code == 200

    with running([*launcher, *container["command"][1:], *args], ready=ready, env=env, log=tmp_path / "server.log", timeout=150) as proc:
        url = json.loads((server_home / "servers" / f"{proc.pid}.json").read_text())["url"]
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        r = requests.post(f"{url}/v2/models/{isvc}/infer", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        got = torch.tensor(r.json()["outputs"][0]["data"]).reshape(2, 10)
        assert torch.allclose(got, model(x), atol=1e-5)
        assert requests.post(f"{url}/v2/models/3d_unet.v2/infer", json=body, headers=headers, timeout=30).status_code == 404
    assert _snapshot(mnt) == before  # the predictor mounts /mnt/models read-only: serving wrote nothing there


def test_storage_initializer_failure_is_one_line_and_leaves_mnt_models_empty(registry: Registry, tmp_path: Path, cli) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    missing = f"modelpack://{registry.host}/nobody/nothing@sha256:" + "0" * 64
    proc = cli("storage-init", missing, str(mnt))
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert list(mnt.iterdir()) == []
    proc = cli("storage-init", f"modelpack://{registry.host}/team/x:latest", str(mnt))
    assert proc.returncode != 0 and "digest" in proc.stderr and list(mnt.iterdir()) == []
