"""Interop with a client we did not write (oras-py) against the real test registry.

oras-py pulls what we publish and names every file by its title; we list, pull,
show, export and load what oras-py pushes in the modctl layout (a tiny BERT built
from a config: no download).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import oras.client
import pytest
import torch
from modctl_layout import CONFIG_TYPE, DOCS, SPEC_TYPES, TOKENIZER, bert_artifact

from nbmodelpack import api, remote

sys.path.insert(0, str(Path(__file__).parent))
import test_registry as shared  # noqa: E402
from registry_server import Registry  # noqa: E402

# The registry tests' fixtures: a real registry per session, a namespace and a logged-in remote per test.
registry, docker_config, namespace, team = shared.registry, shared.docker_config, shared.namespace, shared.team
packed_mlp = shared.packed_mlp

pytestmark = pytest.mark.e2e
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
AGE_MAGIC = b"age-encryption.org/v1\n"


def oras_client(registry: Registry) -> oras.client.OrasClient:
    client = oras.client.OrasClient(hostname=registry.host, insecure=True, auth_backend="basic")
    client.auth.set_basic_auth(registry.user, registry.password)
    return client


def test_oras_pulls_our_plain_int8_and_encrypted_bundles_with_file_names(team: remote.Remote, registry: Registry, namespace: str, tmp_path: Path) -> None:
    ref, _, _ = packed_mlp("interop")
    int8 = api.compress(ref, quantize="int8", prune=0.5).info.ref
    _, recipient = api.keygen_age(tmp_path / "me.txt")
    encrypted = api.encrypt(ref, recipients=[recipient]).ref
    client = oras_client(registry)
    expected = {ref: ("model.safetensors", b"" ), int8: ("model.safetensors.zst", ZSTD_MAGIC), encrypted: ("model.safetensors.age", AGE_MAGIC)}
    for local, (weights, magic) in expected.items():
        remote.publish(local, "team")
        target = f"{registry.host}/{namespace}/interop:{local.split(':')[1]}"
        out = tmp_path / local.replace(":", "-")
        pulled = {Path(p).name for p in client.pull(target=target, outdir=str(out))}
        manifest = client.get_manifest(target)
        # What a spec-only consumer sees: model-spec media types, a title on every layer.
        assert {layer["mediaType"] for layer in manifest["layers"]} <= SPEC_TYPES and manifest["config"]["mediaType"] == CONFIG_TYPE
        assert pulled == {layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]}
        assert {weights, "README.md", "architecture.json"} <= pulled and (weights == "model.safetensors" or "model.safetensors" not in pulled)
        assert (out / weights).read_bytes().startswith(magic)


def test_a_modctl_layout_artifact_pushed_by_oras_lists_pulls_shows_exports_and_loads(team: remote.Remote, registry: Registry, namespace: str, tmp_path: Path, cli) -> None:
    artifact, model = bert_artifact()
    config, items, annotations = artifact.write(tmp_path / "push")
    annotation_file = tmp_path / "annotations.json"
    annotation_file.write_text(json.dumps(annotations))
    oras_client(registry).push(
        target=f"{registry.host}/{namespace}/bert-tiny:v1", files=items, manifest_config=f"{config}:{CONFIG_TYPE}",
        annotation_file=str(annotation_file), disable_path_validation=True,
    )
    params = json.loads(artifact.config)["config"]["paramSize"]

    listed = json.loads(cli("ls", "--remote", "team", "--json", check=True).stdout)
    assert [(d["ref"], d["param_size"], d["precision"], d["format"], d["architecture"]["class"]) for d in listed] == [
        ("team/bert-tiny@" + listed[0]["digest"], params, "float32", "safetensors", "transformer")
    ]
    assert params in cli("ls", "--remote", "team", check=True).stdout

    cli("pull", "team/bert-tiny:v1", check=True)
    shown = cli("show", "bert-tiny:v1", check=True).stdout
    assert f"({params})  precision float32  format safetensors" in shown and "load: transformers bert model from config.json" in shown
    assert "no model card (README.md)" in cli("show", "bert-tiny:v1", "--card", check=True).stdout

    cli("export", "bert-tiny:v1", "--files", str(tmp_path / "files"), check=True)
    files = {str(p.relative_to(tmp_path / "files")): p.read_bytes() for p in (tmp_path / "files").rglob("*") if p.is_file()}
    assert set(files) == {"model.safetensors", "config.json", *DOCS, *TOKENIZER}
    assert {k: files[k] for k in (*DOCS, *TOKENIZER)} == {**DOCS, **TOKENIZER}

    loaded = api.load("bert-tiny:v1")
    x = torch.randint(0, 64, (2, 8))
    assert loaded.bundle_form == "transformers" and torch.equal(loaded(x).last_hidden_state, model(x).last_hidden_state)
