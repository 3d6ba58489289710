"""A ``Sequential``/``ModuleList``/``ModuleDict`` of allowed layers is packed as data, not as a graph."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

import nbmodelpack
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.architecture import describe
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.errors import ArchitectureError

SEQ = "torch.nn.modules.container:Sequential"
LINEAR = {"class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": 3, "out_features": 2}}


def _cnn() -> nn.Module:
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(4, 8, 3, padding="same", bias=False), nn.GELU(approximate="tanh")),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25), nn.Linear(8, 10), nn.LayerNorm(10, bias=False),
    )
    net(torch.randn(4, 1, 28, 28))  # batch norm statistics that are not the defaults
    return net.eval()


def _arch(ref: str) -> dict:
    return nbmodelpack.get_store().open(ref).read_json("architecture.json")


def test_a_sequential_cnn_packs_as_a_module_tree_and_loads_with_identical_outputs(home):
    model = _cnn()
    info = nbmodelpack.pack(model, "cnn", example=torch.randn(2, 1, 28, 28))
    arch = _arch(info.ref)
    assert arch["strategy"] == "modules" and not nbmodelpack.get_store().open(info.ref).has("model.pt2")
    assert arch["tree"]["children"]["4"]["children"]["0"]["kwargs"]["bias"] is False
    loaded = nbmodelpack.load(info.ref)
    assert loaded.bundle_form == "modules" and type(loaded) is nn.Sequential and not loaded.training
    assert repr(loaded) == repr(model)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert "Sequential of 11 modules (Conv2d, BatchNorm2d" in str(nbmodelpack.get_store().open(info.ref).info)


def test_module_lists_and_dicts_nest_and_keep_their_names(home):
    model = nn.ModuleDict({"encoder": nn.ModuleList([nn.Linear(3, 3), nn.Tanh()]), "head": nn.Sequential(nn.Embedding(5, 3, padding_idx=0))})
    info = nbmodelpack.pack(model, "dict")
    loaded = nbmodelpack.load(info.ref)
    assert loaded.bundle_form == "modules" and repr(loaded) == repr(model)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))


class _Scaled(nn.Linear):  # a local class: not importable by a fresh process
    pass


@pytest.mark.parametrize(
    "build",
    [
        lambda: nn.Sequential(nn.Linear(3, 2), _Scaled(2, 2)),
        lambda: (lambda lin: nn.Sequential(lin, nn.ReLU(), lin))(nn.Linear(2, 2)),
        lambda: (lambda s: (s[0].register_forward_hook(lambda *a: None), s)[1])(nn.Sequential(nn.Linear(2, 2))),
        lambda: (lambda s: (setattr(s[0], "in_features", 5), s)[1])(nn.Sequential(nn.Linear(2, 2))),
    ],
    ids=["local-class-leaf", "shared-submodule", "forward-hook", "attribute-not-matching-weights"],
)
def test_a_tree_that_does_not_rebuild_exactly_falls_back_to_the_export_graph(home, build):
    model = build()
    example = torch.randn(2, model[0].in_features if model[0].in_features != 5 else 2)
    info = nbmodelpack.pack(model, "odd", example=example)
    assert _arch(info.ref)["strategy"] == "export"


def _with_architecture(name: str, arch: dict) -> str:
    info = nbmodelpack.pack(nn.Linear(3, 2), name)
    store = nbmodelpack.get_store()
    draft = Draft.from_parent(store.open(info.ref).manifest, name=name, op="pack")
    draft.replace_layer(store.put_layer("architecture.json", mt.WEIGHT_CONFIG, json.dumps(arch).encode()))
    return store.commit(draft).ref


@pytest.mark.parametrize("count", [10_001, pytest.param(1_000_000, marks=pytest.mark.slow)])  # 10^6: parsing the JSON takes seconds
def test_a_tree_of_too_many_children_is_refused_in_one_line_before_anything_is_built(home, count):
    children = {str(i): {} for i in range(count)}
    ref = _with_architecture("wide", {"strategy": "modules", "class": SEQ, "tree": {"class": SEQ, "children": children}})
    with pytest.raises(ArchitectureError, match="more than 10,000 modules") as err:
        nbmodelpack.load(ref)
    assert "\n" not in str(err.value)
    assert describe(_arch(ref)).startswith("invalid module tree (refused")


def test_listings_say_a_tree_leaf_outside_the_allow_list_is_refused(home):
    arch = {"strategy": "modules", "class": SEQ, "tree": {"class": SEQ, "children": {"0": LINEAR, "1": {"class": "mylab.layers:Fancy", "kwargs": {}}}}}
    assert describe(arch) == "Sequential of 2 modules (Linear, Fancy); refused — mylab.layers:Fancy is not an allowed module, needs trust_code"
    assert describe(arch, ["mylab"]) == "Sequential of 2 modules (Linear, Fancy)"


# Pack in one fresh process, load in another: neither may import torch's export machinery.
PACK = textwrap.dedent("""
    import sys, torch, nbmodelpack
    from torch import nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10)).eval()
    info = nbmodelpack.pack(m, "seed-seq", example=torch.randn(2, 1, 28, 28))
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.save({"x": x, "y": m(x)}, sys.argv[1])
    print(info.ref, "torch._export.serde.serialize" in sys.modules, "torch.export._trace" in sys.modules)
""")
LOAD = textwrap.dedent("""
    import json, sys, torch, nbmodelpack
    io = torch.load(sys.argv[1], weights_only=True)
    m = nbmodelpack.load("seed-seq:1")
    out = {"form": m.bundle_form, "export_imported": "torch._export.serde.serialize" in sys.modules or "torch.export._trace" in sys.modules}
    with torch.no_grad():
        out["identical"] = torch.equal(m(io["x"]), io["y"])
    m.train()
    out["dropout_on"] = not torch.equal(m(io["x"]), m(io["x"]))
    loss = m(io["x"]).pow(2).mean()
    loss.backward()
    out["grads"] = all(p.grad is not None for p in m.parameters())
    print(json.dumps(out))
""")


@pytest.mark.slow  # two fresh processes import torch
def test_a_sequential_packs_and_loads_trainable_in_fresh_processes_without_torch_export(run_py, tmp_path):
    io_file = tmp_path / "io.pt"
    packed = run_py(f"import sys; sys.argv = ['pack', {str(io_file)!r}]\n" + PACK).stdout.split()
    assert packed == ["seed-seq:1", "False", "False"]
    got = json.loads(run_py(f"import sys; sys.argv = ['load', {str(io_file)!r}]\n" + LOAD).stdout.strip().splitlines()[-1])
    assert got == {"form": "modules", "export_imported": False, "identical": True, "dropout_on": True, "grads": True}


def test_an_image_of_a_tree_carries_the_code_of_its_non_torch_leaves(tmp_path):
    from nbmodelpack.serving.containerize import _model_code

    tmp_path = tmp_path / "src"
    tmp_path.mkdir()
    torch_only = {"strategy": "modules", "tree": {"class": SEQ, "children": {"0": LINEAR}}}
    assert _model_code(torch_only, tmp_path) == [] and not list(tmp_path.iterdir())
    local = {"strategy": "modules", "tree": {"class": SEQ, "children": {"0": LINEAR, "1": {"class": "models:Scale", "kwargs": {}}}}}
    assert _model_code(local, tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["models.py"]  # tests/models.py, a local module


def test_structured_pruning_of_a_sequential_stays_a_module_tree(home):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    x = torch.randn(8, 1, 28, 28)
    parent = nbmodelpack.pack(model, "mlp", example=x)
    child = nbmodelpack.compress(parent.ref, prune=0.5, structured=True, example=x).child
    loaded = nbmodelpack.load(child.ref)
    assert loaded.bundle_form == "modules" and loaded[1].out_features == 32
    assert not nbmodelpack.get_store().open(child.ref).has("model.pt2")


def test_a_torchvision_model_inside_a_sequential_is_a_leaf_built_by_its_builder(home):
    import torchvision

    model = nn.Sequential(torchvision.models.squeezenet1_1(), nn.Linear(1000, 5)).eval()
    x = torch.randn(2, 3, 64, 64)
    info = nbmodelpack.pack(model, "transfer", example=x)
    assert _arch(info.ref)["tree"]["children"]["0"] == {"class": "torchvision.models.squeezenet:squeezenet1_1", "kwargs": {}}
    loaded = nbmodelpack.load(info.ref)
    with torch.no_grad():
        assert loaded.bundle_form == "modules" and torch.equal(loaded(x), model(x))
