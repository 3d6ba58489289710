"""pack → load round trips, each checked in a fresh process that never saw the model."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from models import CNN, MLP, TiedLM

import nbmodelpack
from nbmodelpack.errors import ArchitectureError


def _roundtrip(run_py, model: torch.nn.Module, x: torch.Tensor, ref: str, tmp_path, **load_kwargs) -> None:
    """Load ``ref`` in a fresh process and compare its output with ``model(x)`` bit for bit."""
    model.eval()
    torch.save({"x": x, "y": model(x).detach()}, tmp_path / "io.pt")
    code = textwrap.dedent(f"""
        import torch, nbmodelpack
        io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)
        m = nbmodelpack.load({ref!r}, **{load_kwargs!r})
        y = m(io["x"])
        assert torch.equal(y, io["y"]), (y - io["y"]).abs().max()
        print(m.bundle_info.ref)
    """)
    name = ref.split(":")[0]
    assert run_py(code).stdout.strip().startswith(f"{name}:")


def test_mlp_round_trip_is_exact_in_a_fresh_process(run_py, tmp_path):
    torch.manual_seed(0)
    model = MLP(hidden=32)
    info = nbmodelpack.pack(model, "mlp", example=torch.randn(2, 1, 28, 28), labels=range(10))
    assert info.architecture == {"strategy": "class", "class": "models:MLP", "load": "models:MLP (class)"}
    _roundtrip(run_py, model, torch.randn(5, 1, 28, 28), "mlp:1", tmp_path)


def test_cnn_with_batchnorm_buffers_round_trips_exactly(run_py, tmp_path):
    torch.manual_seed(1)
    model = CNN()
    model.train()
    model(torch.randn(16, 1, 28, 28))  # move the running statistics away from their defaults
    nbmodelpack.pack(model, "cnn", example=torch.randn(1, 1, 28, 28))
    _roundtrip(run_py, model, torch.randn(3, 1, 28, 28), "cnn:latest", tmp_path)


def test_tied_weights_are_stored_once_and_stay_tied(run_py, tmp_path):
    torch.manual_seed(2)
    model = TiedLM()
    info = nbmodelpack.pack(model, "tied", example=torch.randint(0, 50, (2, 7)))
    weights = next(layer for layer in info.layers if layer["filepath"] == "model.safetensors")
    assert weights["size"] < 50 * 16 * 4 * 2  # one copy of the shared matrix, not two
    _roundtrip(run_py, model, torch.randint(0, 50, (4, 7)), "tied:1", tmp_path)
    loaded = nbmodelpack.load("tied:1")
    assert loaded.proj.weight is loaded.embed.weight


def test_resnet18_round_trips_by_factory_name(run_py, tmp_path):
    import torchvision

    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=10)
    info = nbmodelpack.pack(model, "resnet", arch="torchvision.models:resnet18", arch_kwargs={"num_classes": 10})
    assert info.architecture["class"] == "torchvision.models:resnet18"
    _roundtrip(run_py, model, torch.randn(2, 3, 64, 64), "resnet:1", tmp_path)


def test_class_defined_in_main_loads_in_a_process_that_never_saw_it(run_py, tmp_path):
    script = textwrap.dedent(f"""
        import torch, nbmodelpack
        class Scratch(torch.nn.Module):
            def __init__(self, width):
                super().__init__()
                self.l1 = torch.nn.Linear(12, width)
                self.l2 = torch.nn.Linear(width, 3)
            def forward(self, x):
                return torch.softmax(self.l2(torch.nn.functional.gelu(self.l1(x))), -1)
        torch.manual_seed(4)
        m = Scratch(width=20).eval()
        x = torch.randn(6, 12)
        torch.save({{"x": x, "y": m(x).detach()}}, {str(tmp_path / 'io.pt')!r})
        print(nbmodelpack.pack(m, "scratch", example=x[:1]).architecture["strategy"])
    """)
    assert run_py(script).stdout.strip() == "export"
    code = textwrap.dedent(f"""
        import torch, nbmodelpack
        io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)
        m = nbmodelpack.load("scratch")
        assert torch.equal(m(io["x"]), io["y"])
        assert torch.equal(m(torch.randn(9, 12)).sum(-1).round(), torch.ones(9))  # any batch size
    """)
    run_py(code)


def test_exported_graph_holds_no_second_copy_of_the_weights():
    torch.manual_seed(5)

    class Big(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = torch.nn.Linear(512, 512)

        def forward(self, x):
            return self.l(x)

    info = nbmodelpack.pack(Big(), "big", example=torch.randn(2, 512))
    sizes = {layer["filepath"]: layer["size"] for layer in info.layers}
    assert sizes["model.safetensors"] > 512 * 512 * 4
    assert sizes["model.pt2"] < 512 * 512 * 4 / 10


def test_source_strategy_needs_trust_code_to_pack_and_to_load(run_py):
    class Gated(torch.nn.Module):
        def __init__(self, n: int = 4) -> None:
            super().__init__()
            self.n = n
            self.l = torch.nn.Linear(n, n)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent branch: torch.export cannot capture it
                return self.l(x)
            return -self.l(x)

    with pytest.raises(ArchitectureError) as err:
        nbmodelpack.pack(Gated(), "gated", example=torch.randn(2, 4))
    assert "trust_code" in str(err.value) and "importable" in str(err.value)
    assert nbmodelpack.ls() == []
    info = nbmodelpack.pack(Gated(), "gated", example=torch.randn(2, 4), trust_code=True)
    assert info.architecture["strategy"] == "source"
    proc = run_py("import nbmodelpack; nbmodelpack.load('gated')", check=False)
    assert "trust_code" in proc.stderr
    run_py("import nbmodelpack, torch; m = nbmodelpack.load('gated', trust_code=True); print(m(torch.ones(1, 4)).shape)")


def test_signature_and_processing_are_inferred_from_the_example():
    model = MLP(hidden=8)
    info = nbmodelpack.pack(model, "sig", example=torch.randn(1, 1, 28, 28), labels=[f"digit {i}" for i in range(10)], preprocess={"mode": "L", "size": [28, 28]})
    bundle = nbmodelpack.get_store().open(info.ref)
    sig = bundle.read_json("signature.json")
    assert sig["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert sig["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    proc = bundle.read_json("processing.json")
    assert proc["labels"][3] == "digit 3" and proc["preprocess"]["size"] == [28, 28]


def test_metrics_and_description_reach_the_card():
    info = nbmodelpack.pack(MLP(hidden=8), "carded", metrics={"accuracy": 97.5}, description="tiny")
    front = nbmodelpack.get_store().open(info.ref).card().front
    assert front["metrics"] == {"reported": {"accuracy": 97.5}} and front["description"] == "tiny"  # labelled: the packer did not say where
    assert json.loads(nbmodelpack.api.to_json(info))["metrics"] == {"accuracy": 97.5}


def test_loaded_module_is_in_eval_mode_and_knows_its_bundle():
    nbmodelpack.pack(CNN(), "evalmode")
    model = nbmodelpack.load("evalmode:1")
    assert not model.training
    assert model.bundle_info.name == "evalmode" and model.bundle_info.version == 1


def test_a_loaded_exported_model_can_be_packed_again(run_py):
    class Local(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = torch.nn.Linear(6, 2)

        def forward(self, x):
            return self.l(x)

    nbmodelpack.pack(Local(), "again", example=torch.randn(2, 6))
    loaded = nbmodelpack.load("again")
    info = nbmodelpack.pack(loaded, "again", example=torch.randn(2, 6))
    assert info.version == 2 and info.architecture["strategy"] == "export"
    x = torch.randn(3, 6)
    assert torch.equal(nbmodelpack.load("again:2")(x), loaded(x))


def _graph_only() -> torch.nn.Module:
    """A model only the export graph can carry: its class is local to this function."""

    class Local(torch.nn.Linear):
        pass

    return Local(3, 2)


def test_exported_graph_carries_no_pickle():
    import io
    import zipfile

    info = nbmodelpack.pack(_graph_only(), "nopickle", example=torch.randn(1, 3))
    blob = nbmodelpack.get_store().open(info.ref).read("model.pt2")
    sizes = {i.filename: i.file_size for i in zipfile.ZipFile(io.BytesIO(blob)).infolist()}
    assert all(size == 0 for name, size in sizes.items() if "sample_inputs" in name)


def test_a_pt2_with_a_pickle_payload_is_refused_before_torch_sees_it(home, tmp_path):
    import io
    import zipfile

    from nbmodelpack.bundle import mediatypes as mt
    from nbmodelpack.bundle.draft import Draft
    from nbmodelpack.errors import UnsafeFileError

    info = nbmodelpack.pack(_graph_only(), "evilpt2", example=torch.randn(1, 3))
    store = nbmodelpack.get_store()
    bundle = store.open(info.ref)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    src = zipfile.ZipFile(io.BytesIO(bundle.read("model.pt2")))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            if "sample_inputs" in item.filename:
                payload = io.BytesIO()
                torch.save(Payload(), payload)
                dst.writestr(item, payload.getvalue())
            else:
                dst.writestr(item, src.read(item))
    draft = Draft.from_parent(bundle.manifest, name="evilpt2", op="pack")
    draft.replace_layer(store.put_layer("model.pt2", mt.CODE, out.getvalue()))
    store.commit(draft)
    with pytest.raises(UnsafeFileError) as err:
        nbmodelpack.load("evilpt2:2")
    assert "model.pt2 carries pickled sample inputs" in str(err.value)
    assert not marker.exists()
