"""A bundle's ``architecture.json`` decides nothing about what code runs: allow-listed classes only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from models import MLP

import nbmodelpack
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.architecture import describe, module_allowed, plain_kwargs
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.errors import ArchitectureError
from nbmodelpack.pytorch.resolve import resolve_architecture


def _with_architecture(name: str, arch: dict[str, Any]) -> str:
    """Pack a small Linear and commit a child whose architecture.json is ``arch`` (digests all valid)."""
    info = nbmodelpack.pack(torch.nn.Linear(3, 2), name)
    store = nbmodelpack.get_store()
    draft = Draft.from_parent(store.open(info.ref).manifest, name=name, op="pack")
    draft.replace_layer(store.put_layer("architecture.json", mt.WEIGHT_CONFIG, json.dumps(arch).encode()))
    return store.commit(draft).ref


def _attacks(sentinel: Path) -> dict[str, dict[str, Any]]:
    return {
        "subprocess-run": {"strategy": "class", "class": "subprocess:run", "kwargs": {"args": ["touch", str(sentinel)]}},
        "os-system": {"strategy": "class", "class": "os:system", "kwargs": {"command": f"touch {sentinel}"}},
        "walk-through-torch": {"strategy": "class", "class": "torch.serialization:os.system", "kwargs": {"command": f"touch {sentinel}"}},
        "private-walk": {"strategy": "class", "class": "torch.nn:Module.__subclasses__", "kwargs": {}},
        "callable-kwargs": {"strategy": "class", "class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": {"__callable__": "os:system"}, "out_features": 2}},
        "builder-downloads": {"strategy": "class", "class": "torchvision.models:resnet18", "kwargs": {"weights": "DEFAULT"}},
        "not-a-module-class": {"strategy": "class", "class": "torch:Tensor", "kwargs": {}},
    }


@pytest.mark.parametrize("attack", list(_attacks(Path("x"))))
def test_load_refuses_a_hostile_class_target_before_calling_anything(home, tmp_path, attack):
    sentinel = tmp_path / "pwned"
    ref = _with_architecture("victim", _attacks(sentinel)[attack])
    with pytest.raises(ArchitectureError) as err:
        nbmodelpack.load(ref)
    assert "\n" not in str(err.value)
    assert not sentinel.exists()


def test_a_function_in_a_trusted_module_is_still_refused(home, tmp_path):
    (home / "config.toml").write_text('[trust]\nmodules = ["models", "subprocess"]\n')
    sentinel = tmp_path / "pwned"
    ref = _with_architecture("victim", {"strategy": "class", "class": "subprocess:run", "kwargs": {"args": ["touch", str(sentinel)]}})
    with pytest.raises(ArchitectureError, match="not a torch.nn.Module class"):
        nbmodelpack.load(ref)
    assert not sentinel.exists()


def test_cli_compress_of_a_hostile_target_is_one_line_naming_trust_code_and_config(cli, home, tmp_path):
    sentinel = tmp_path / "pwned"
    ref = _with_architecture("victim", {"strategy": "class", "class": "subprocess:run", "kwargs": {"args": ["touch", str(sentinel)]}})
    proc = cli("compress", ref, "--quantize", "fp16")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "--trust-code" in lines[0] and "[trust] modules" in lines[0]
    assert not sentinel.exists()


def test_untrusted_module_class_needs_trust_code_or_config(home):
    torch.manual_seed(0)
    info = nbmodelpack.pack(MLP(hidden=4), "mlp")
    (home / "config.toml").write_text("")
    with pytest.raises(ArchitectureError, match=r"models:MLP is not in an allowed module.*trust_code=True.*\[trust\] modules"):
        nbmodelpack.load(info.ref)
    assert isinstance(nbmodelpack.load(info.ref, trust_code=True), MLP)
    (home / "config.toml").write_text('[trust]\nmodules = ["models"]\n')
    assert isinstance(nbmodelpack.load(info.ref), MLP)


def test_pack_with_arch_applies_the_load_check(home, tmp_path):
    sentinel = tmp_path / "pwned"
    with pytest.raises(ArchitectureError, match="not in an allowed module"):
        nbmodelpack.pack(torch.nn.Linear(3, 2), "x", arch="subprocess:run", arch_kwargs={"args": ["touch", str(sentinel)]})
    assert not sentinel.exists()
    assert nbmodelpack.ls() == []


def test_torchvision_builder_and_torch_class_load_without_trust(home):
    (home / "config.toml").write_text("")
    import torchvision

    model = torchvision.models.resnet18(num_classes=4)
    info = nbmodelpack.pack(model, "resnet", arch="torchvision.models:resnet18", arch_kwargs={"num_classes": 4})
    loaded = nbmodelpack.load(info.ref)
    assert type(loaded) is type(model) and torch.equal(loaded.fc.weight, model.fc.weight)
    linear = nbmodelpack.pack(torch.nn.Linear(3, 2), "lin")
    assert linear.architecture["class"] == "torch.nn.modules.linear:Linear"
    assert isinstance(nbmodelpack.load(linear.ref), torch.nn.Linear)


def test_description_says_refused_exactly_when_load_refuses_the_module(home, tmp_path):
    (home / "config.toml").write_text('[trust]\nmodules = ["models"]\n')
    cases = {
        "torch.nn.modules.linear:Linear": "torch.nn.modules.linear:Linear (class)",
        "models:MLP": "models:MLP (class)",
        "subprocess:run": "subprocess:run (function; refused — not an allowed module, needs trust_code)",
        "torchx.nn:Linear": "torchx.nn:Linear (class; refused — not an allowed module, needs trust_code)",
    }
    for target, expected in cases.items():
        assert describe({"strategy": "class", "class": target}, ["models"]) == expected
    assert describe({"strategy": "source"}) == "source code (needs trust_code)"
    assert describe({"strategy": "export", "file": "model.pt2"}) == "export graph"
    assert "refused" in describe({"strategy": "class", "class": "torch.nn:Linear", "kwargs": {"x": {"__callable__": "os:system"}}})
    assert module_allowed("torchvision.models.resnet") and not module_allowed("torchvision_evil")


def test_kwargs_must_be_plain_bounded_json():
    deep: Any = 1
    for _ in range(20):
        deep = [deep]
    for bad in ({"a": deep}, {"a": {"__callable__": "os:system"}}, {"a": b"bytes"}, {"__class__": 1}, ["not", "a", "dict"]):
        with pytest.raises(ArchitectureError):
            plain_kwargs(bad)
    assert plain_kwargs({"hidden": [1, 2.5, None, True, {"k": "v"}]}) == {"hidden": [1, 2.5, None, True, {"k": "v"}]}


def test_a_class_from_an_untrusted_module_also_stores_the_export_graph_that_load_uses(home):
    (home / "config.toml").write_text("")
    torch.manual_seed(0)
    model = MLP(hidden=8).eval()
    x = torch.randn(3, 1, 28, 28)
    info = nbmodelpack.pack(model, "mlp", example=x[:1])
    arch = json.loads(nbmodelpack.get_store().open(info.ref).read("architecture.json"))
    assert arch["strategy"] == "class" and arch["file"] == "model.pt2"
    assert describe(arch) == "models:MLP (class; not an allowed module — loads as the export graph unless trusted)"
    graph = nbmodelpack.load(info.ref)
    assert not isinstance(graph, MLP) and torch.equal(graph(x), model(x))
    (home / "config.toml").write_text('[trust]\nmodules = ["models"]\n')
    assert describe(arch, ["models"]) == "models:MLP (class)"
    assert isinstance(nbmodelpack.load(info.ref), MLP)


@pytest.mark.parametrize(
    "arch",
    [
        {"strategy": "class"},
        {"strategy": 5},
        {"strategy": "class", "class": "torch.nn.modules.linear:Linear", "kwargs": ["in_features", 3]},
        {"strategy": "class", "class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": 3, "out_features": 2}, "aliases": "weird"},
        {"strategy": "class", "class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": 300, "out_features": 2}},
        {"strategy": "export"},
        {"strategy": "source", "class": "nocolon"},
    ],
    ids=["no-class", "strategy-not-a-name", "kwargs-a-list", "aliases-a-string", "wrong-shapes", "export-without-graph", "source-malformed"],
)
def test_a_bundle_that_cannot_be_rebuilt_is_one_line(home, arch):
    from nbmodelpack.errors import ModelPackError

    ref = _with_architecture("broken", arch)
    with pytest.raises(ModelPackError) as err:
        nbmodelpack.load(ref, trust_code=True)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize("target", ["torch.utils.model_dump.__main__:X", "torch.testing._internal.common_utils:TestCase"])
def test_a_private_or_dunder_torch_module_is_never_imported(target, monkeypatch):
    # Importing either runs code (argv parsing and sys.exit, monkey-patching torch): refused by name.
    import sys

    monkeypatch.setattr(sys, "argv", ["x", "--not-a-flag"])
    before = set(sys.modules)
    with pytest.raises(ArchitectureError, match="not in an allowed module"):
        resolve_architecture(target, {})
    assert target.partition(":")[0] not in set(sys.modules) - before
