"""ModelPack artifacts other tools made: listed from their config, carded, exported with tars unpacked, loaded through transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from modctl_layout import (
    CONFIG_TYPE,
    DOCS,
    MODEL,
    TOKENIZER,
    Artifact,
    add_to_store,
    bert_artifact,
    tar_bytes,
)

import nbmodelpack
from nbmodelpack.errors import ArchitectureError, BundleFormatError, UsageError
from nbmodelpack.store import get_store


@pytest.fixture
def bert():  # noqa: ANN201 - (artifact, model)
    artifact, model = bert_artifact()
    add_to_store(get_store(), "bert-tiny", artifact)
    return artifact, model


def test_show_and_ls_give_the_config_facts_of_a_foreign_artifact(bert, cli) -> None:
    info = nbmodelpack.show("bert-tiny:v1")
    params = json.loads(bert[0].config)["config"]["paramSize"]
    assert (info.param_size, info.precision, info.format) == (params, "float32", "safetensors")
    assert info.parameters == round(float(params[:-1]) * 1000)
    assert info.architecture["class"] == "transformer" and info.architecture["load"] == "transformers bert model from config.json"
    text = cli("show", "bert-tiny:v1", check=True).stdout
    assert f"({params})  precision float32  format safetensors" in text and "transformer (ModelPack config); load: transformers bert" in text
    assert params in cli("ls", check=True).stdout


def test_card_of_an_artifact_without_readme_says_what_it_holds(bert, cli) -> None:
    proc = cli("show", "bert-tiny:v1", "--card")
    assert proc.returncode == 0, proc.stderr
    assert "no model card (README.md)" in proc.stdout and "- docs: doc, tar," in proc.stdout and "- tokenizer: code, tar+gzip," in proc.stdout
    assert "bundle not found" not in proc.stdout + proc.stderr


def test_export_files_unpacks_tar_and_tar_gzip_layers_by_their_filepath(bert, tmp_path: Path) -> None:
    out = nbmodelpack.export("bert-tiny:v1", tmp_path / "files", format="files")
    found = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {k: found[k] for k in (*DOCS, *TOKENIZER)} == {**DOCS, **TOKENIZER}
    assert set(found) == {"model.safetensors", "config.json", *DOCS, *TOKENIZER}


def test_load_builds_the_transformers_model_from_config_json_and_gives_the_same_outputs(bert) -> None:
    _, model = bert
    loaded = nbmodelpack.load("bert-tiny:v1")
    x = torch.randint(0, 64, (2, 8))
    assert loaded.bundle_form == "transformers" and type(loaded).__name__ == "BertModel"
    assert torch.equal(loaded(x).last_hidden_state, model(x).last_hidden_state)
    same = nbmodelpack.load("bert-tiny:v1", arch="transformers.BertModel")
    assert torch.equal(same(x).last_hidden_state, model(x).last_hidden_state)


def test_auto_map_in_config_json_never_reaches_remote_code(tmp_path: Path) -> None:
    artifact, model = bert_artifact()
    hf = json.loads(artifact.layers[1][2])
    hf["auto_map"] = {"AutoModel": "evil--modeling.Evil"}
    artifact.layers[1] = (artifact.layers[1][0], artifact.layers[1][1], json.dumps(hf).encode())
    add_to_store(get_store(), "bert-automap", artifact)
    loaded = nbmodelpack.load("bert-automap:v1")
    assert type(loaded).__name__ == "BertModel" and not hasattr(loaded.config, "auto_map")


def test_without_config_json_load_says_what_the_artifact_holds_and_arch_builds_an_allowed_class() -> None:
    artifact, _ = bert_artifact(with_hf_config=False)
    add_to_store(get_store(), "bare", artifact)
    with pytest.raises(ArchitectureError, match=r"neither architecture.json nor a Hugging Face config.json.*holds model.safetensors \(weights\), docs \(doc, tar\)"):
        nbmodelpack.load("bare:v1")
    with pytest.raises(UsageError, match="transformers.pipeline is not a torch.nn.Module class"):
        nbmodelpack.load("bare:v1", arch="transformers.pipeline")  # a factory the artifact would feed: never called
    with pytest.raises(UsageError, match="only transformers model classes"):
        nbmodelpack.load("bare:v1", arch="transformers.Conv1D")
    with pytest.raises(ArchitectureError, match="subprocess:Popen is not in an allowed module"):
        nbmodelpack.load("bare:v1", arch="subprocess.Popen")
    prelu = torch.nn.PReLU(init=0.3)
    weights = Artifact(b'{"config": {}}', [("model.safetensors", f"{MODEL}.weight.v1.raw", safetensors.torch.save(prelu.state_dict()))])
    add_to_store(get_store(), "prelu", weights)
    loaded = nbmodelpack.load("prelu:v1", arch="torch.nn.PReLU")
    x = torch.randn(5)
    assert loaded.bundle_form == "class" and torch.equal(loaded(x), prelu(x))
    with pytest.raises(BundleFormatError, match="holds 1 tensors Identity has no place for"):
        nbmodelpack.load("prelu:v1", arch="torch.nn.Identity")
    with pytest.raises(ArchitectureError, match="Linear cannot be built"):
        nbmodelpack.load("prelu:v1", arch="torch.nn.Linear")  # needs arguments no artifact gives


def test_weights_only_in_a_tar_layer_load_says_so_in_one_line() -> None:
    artifact, _ = bert_artifact()
    filepath, _, data = artifact.layers[0]
    artifact.layers[0] = (filepath, f"{MODEL}.weight.v1.tar", tar_bytes({filepath: data}))
    add_to_store(get_store(), "tarred", artifact)
    with pytest.raises(ArchitectureError, match=r"no safetensors weights as a plain \(raw\) layer.*model.safetensors \(weights, tar\)"):
        nbmodelpack.load("tarred:v1")


def test_an_artifact_pushed_by_plain_oras_is_named_by_its_titles(tmp_path: Path) -> None:
    from nbmodelpack.bundle.manifest import Descriptor, build_manifest

    store = get_store()
    artifact, model = bert_artifact()
    descs = []
    for filepath, media_type, data in artifact.layers:
        digest, size = store.put_bytes(data)
        descs.append(Descriptor(media_type, digest, size, {"org.opencontainers.image.title": filepath}))
    digest, size = store.put_bytes(artifact.config)
    store.add_manifest("titled", build_manifest(Descriptor(CONFIG_TYPE, digest, size), descs, {}), ["v1"])
    x = torch.randint(0, 64, (1, 5))
    assert torch.equal(nbmodelpack.load("titled:v1")(x).last_hidden_state, model(x).last_hidden_state)
    out = nbmodelpack.export("titled:v1", tmp_path / "out", format="files")
    assert (out / "docs" / "NOTES.md").read_bytes() == DOCS["docs/NOTES.md"]


def test_magic_load_takes_arch_and_a_foreign_artifact_without_a_plan_is_one_line(bert, capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbmodelpack")
    assert shell.run_cell("%modelpack load bert-tiny:v1 as bert --arch transformers.BertModel").success
    assert type(shell.user_ns.pop("bert")).__name__ == "BertModel"
    add_to_store(get_store(), "bare", bert_artifact(with_hf_config=False)[0])
    capsys.readouterr()
    assert not shell.run_cell("%modelpack load bare:v1").success
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot load bare: safetensors weights but neither architecture.json" in lines[0], lines
