"""Compression: every variant is a new version that loads anywhere; bad input writes nothing."""

from __future__ import annotations

import json

import pytest
import torch
from models import CNN, MLP, Scale
from torch import nn

import nbmodelpack
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.manifest import sha256_digest
from nbmodelpack.errors import CompressionError, ModelPackError
from nbmodelpack.pytorch.data import mnist_loaders
from nbmodelpack.pytorch.quantize import Int8Linear


def _train(model: nn.Module, loader: torch.utils.data.DataLoader, batches: int = 25) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for i, (x, y) in enumerate(loader):
        if i == batches:
            break
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.utils.data.DataLoader, tuple[torch.Tensor, torch.Tensor]]:
    train, test = mnist_loaders(n_train=8000)
    x = torch.cat([b[0] for b in test])[:600]
    y = torch.cat([b[1] for b in test])[:600]
    return train, (x, y)


@pytest.fixture(scope="module")
def trained(data):  # one training per module; each test packs into its own fresh store
    train, _ = data
    torch.manual_seed(0)
    return {"mlp": _train(MLP(hidden=64), train), "cnn": _train(CNN(channels=8), train)}


def _local_mlp() -> nn.Module:
    class NotebookMLP(nn.Module):  # defined in a function: only torch.export can capture it
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 48), nn.ReLU(), nn.Linear(48, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    return NotebookMLP()


VARIANTS = {
    "mlp": [{"quantize": "int8"}, {"quantize": "int4", "group_size": 32}, {"quantize": "bf16"}, {"prune": 0.6, "quantize": "int8"}, {"prune": 0.5, "structured": True}],
    "cnn": [{"quantize": "fp16"}, {"prune": 0.25, "structured": True, "quantize": "int4"}],
    "local": [{"quantize": "int8"}, {"prune": 0.5, "structured": True, "quantize": "int8"}],
}


def test_each_variant_loads_in_a_fresh_process_like_the_compressed_model(trained, data, run_py, tmp_path):
    _, (x, y) = data
    parents = {
        "mlp": nbmodelpack.pack(trained["mlp"], "mlp", example=x[:1]).ref,  # class capture
        "cnn": nbmodelpack.pack(trained["cnn"], "cnn", example=x[:1]).ref,
    }
    local = _train(_local_mlp(), data[0], 10)
    parents["local"] = nbmodelpack.pack(local, "local", example=x[:1]).ref  # export capture
    assert nbmodelpack.show(parents["local"]).architecture["strategy"] == "export"
    probe = x[:32].clone()
    expected: dict[str, list[list[float]]] = {}
    reported: dict[str, float] = {}
    allowed: dict[str, float] = {}
    for kind, parent in parents.items():
        for variant in VARIANTS[kind]:
            report = nbmodelpack.compress(parent, eval=(x, y), **variant)
            with torch.no_grad():
                expected[report.info.ref] = report.model(probe).tolist()
            assert report.child.weight_bytes < report.parent.weight_bytes, (kind, variant)
            # Sizes are whole bundles, as `ls` shows them: structured pruning adds a torch.export graph,
            # which can outweigh what a small model's weights saved.
            if not variant.get("structured"):
                assert report.child.bundle_bytes < report.parent.bundle_bytes, (kind, variant)
            assert report.child.metric is not None
            reported[report.info.ref] = report.child.metric
            # quantization alone costs little; pruning half the neurons without fine-tuning costs more
            allowed[report.info.ref] = 15 if variant.get("prune") else 2
    torch.save({"probe": probe, "x": x, "y": y}, tmp_path / "probe.pt")
    refs = sorted(expected) + sorted(parents.values())
    # The test measures accuracy itself, on models loaded by a fresh process.
    code = (
        "import json, torch, nbmodelpack\n"

        f"d = torch.load({str(tmp_path / 'probe.pt')!r}, weights_only=True)\n"
        f"refs = {refs!r}\n"
        "out = {}\n"
        "with torch.no_grad():\n"
        "    for r in refs:\n"
        "        m = nbmodelpack.load(r)\n"
        # Our own top-1 (not the library's accuracy()), over the same 256-image batches compress measures:
        # int8's dynamic kernel quantizes activations per batch, so the batches must match.
        "        logits = torch.cat([m(xb) for xb in d['x'].split(256)])\n"
        "        top1 = (logits.argmax(-1) == d['y']).float().mean().item() * 100\n"
        "        out[r] = {'logits': m(d['probe']).tolist(), 'accuracy': top1}\n"
        "print(json.dumps(out))\n"
    )
    loaded = json.loads(run_py(code).stdout.strip().splitlines()[-1])
    for ref, logits in expected.items():
        torch.testing.assert_close(torch.tensor(loaded[ref]["logits"]), torch.tensor(logits), atol=1e-4, rtol=1e-4, msg=ref)
        parent_ref = next(p for p in parents.values() if p.split(":")[0] == ref.split(":")[0])
        measured, parent_accuracy = loaded[ref]["accuracy"], loaded[parent_ref]["accuracy"]
        assert parent_accuracy > 50, parent_ref  # the parents learned something, so a drop is measurable
        assert measured > parent_accuracy - allowed[ref], (ref, measured, parent_accuracy)
        assert measured == pytest.approx(reported[ref], abs=0.01), ref  # the report tells the truth


def test_child_records_recipe_zstd_layer_and_metrics_on_its_card(trained, data):
    _, (x, y) = data
    parent = nbmodelpack.pack(trained["mlp"], "mlp", example=x[:1])
    report = nbmodelpack.compress(parent.ref, quantize="int8", prune=0.5, eval=(x, y))
    child = nbmodelpack.show(report.info.ref)
    assert child.version == 2 and child.recipe["op"] == "compress" and child.recipe["parent"] == parent.digest
    assert child.recipe["params"]["quantize"] == "int8" and child.recipe["params"]["prune"] == 0.5
    assert child.quantization == "int8" and "compressed" in child.badges
    weights = next(layer for layer in child.layers if layer["filepath"] == "model.safetensors")
    assert weights["mediaType"] == mt.WEIGHT and weights["encoding"] == "zstd"
    # The inflated size is recorded, so decompression on load can be capped by it.
    stored = nbmodelpack.get_store().open(report.info.ref)
    assert stored.descriptor("model.safetensors").annotations[mt.PLAIN_SIZE] == str(len(stored.plaintext("model.safetensors")))
    bundle = nbmodelpack.get_store().open(child.ref)
    plain = bundle.plaintext("model.safetensors")
    assert len(plain) > weights["size"]  # zstd made it smaller
    assert sha256_digest(plain) in bundle.config()["modelfs"]["diffIds"]
    assert child.metrics["validation"]["accuracy"] == pytest.approx(report.child.metric, abs=1e-3)
    # The card is written before its own bytes are known: its ratio counts the parent's card.
    assert child.metrics["compression"]["size_ratio"] == pytest.approx(report.ratio, rel=0.1)
    assert report.child.bundle_bytes == child.size and report.parent.bundle_bytes == parent.size  # as `ls` shows
    card = nbmodelpack.card(child.ref)
    assert "compression:" in card and "size_ratio" in card
    # the report renders for notebooks, files, terminals and tools
    assert "<table " in report._repr_html_() and "data:image/png;base64," in report._repr_html_()
    assert report.to_json()["child"]["nonzeros"] <= 0.55 * report.to_json()["parent"]["nonzeros"]
    assert "smaller" in str(report) and "parent" in str(report)


def test_report_without_eval_shows_size_and_output_drift(trained, data, tmp_path):
    _, (x, _y) = data
    parent = nbmodelpack.pack(trained["cnn"], "cnn", example=x[:1])
    report = nbmodelpack.compress(parent.ref, quantize="int4")
    assert report.child.metric is None and report.parent.metric is None
    assert report.child.drift_max is not None and 0 < report.child.drift_mean <= report.child.drift_max
    assert report.ratio > 3  # the whole bundle as `ls` counts it: card, config and manifest too
    png = report.save_png(tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(nbmodelpack.show(report.info.ref).metrics) == {"compression"}


def test_int8_kernel_path_matches_dequantized_path(trained, data):
    _, (x, y) = data
    for name, model in [("mlp", trained["mlp"]), ("local", _train(_local_mlp(), data[0], 10))]:
        parent = nbmodelpack.pack(model, name, example=x[:1])
        ref = nbmodelpack.compress(parent.ref, quantize="int8").info.ref
        fast = nbmodelpack.load(ref)
        portable = nbmodelpack.load(ref, dequantize=True)
        assert any(isinstance(m, Int8Linear) for m in fast.modules()), name
        assert not any(isinstance(m, Int8Linear) for m in portable.modules())
        with torch.no_grad():
            a, b = fast(x), portable(x)
        scale = b.abs().max()
        assert (a - b).abs().max() < 0.05 * scale, name  # int8 activations: small, bounded error
        assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.98, name
        if name == "mlp":  # the fast model packs again, as the float model it stands for
            again = nbmodelpack.load(nbmodelpack.pack(fast, name + "-again", example=x[:1]).ref)
            with torch.no_grad():
                torch.testing.assert_close(again(x), b, atol=1e-5, rtol=1e-5)


def test_finetune_keeps_pruned_weights_at_zero(trained, data):
    train, (x, y) = data
    parent = nbmodelpack.pack(trained["mlp"], "mlp", example=x[:1])
    seen = {}

    def finetune(model: nn.Module) -> None:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for i, (bx, by) in enumerate(train):
            if i == 10:
                break
            opt.zero_grad()
            nn.functional.cross_entropy(model(bx), by).backward()
            opt.step()
        seen["called"] = True

    report = nbmodelpack.compress(parent.ref, prune=0.8, finetune=finetune, eval=(x, y))
    assert seen["called"]
    weights = sum(p.numel() for n, p in trained["mlp"].named_parameters() if n.endswith("weight"))
    assert report.child.nonzeros <= report.parent.nonzeros - 0.8 * weights + 1
    assert report.params["finetune"] is True


def _store_listing() -> list[tuple[str, str]]:
    return [(i.ref, i.digest) for i in nbmodelpack.ls()]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantize": "int3"}, "unknown scheme 'int3'"),
        ({"prune": 1.0}, "outside [0, 1)"),
        ({"prune": -0.1}, "outside [0, 1)"),
        ({"quantize": "int4", "model": "scale"}, "int4 needs Linear or Conv layers"),
        ({"quantize": "int8", "eval": "rgb"}, "eval inputs have shape [8, 3, 32, 32]"),
        ({"quantize": "int8", "eval": "short"}, "eval has 8 inputs but 5 targets"),
        ({}, "nothing to do"),
        ({"quantize": "int4", "group_size": 7}, "must be an even number"),
    ],
)
def test_bad_input_is_refused_and_writes_no_version(trained, data, kwargs, message):
    _, (x, _y) = data
    if kwargs.pop("model", None) == "scale":
        ref = nbmodelpack.pack(Scale(), "scale", example=torch.zeros(2, 28)).ref
    else:
        ref = nbmodelpack.pack(trained["cnn"], "cnn", example=x[:1]).ref
    bad_eval = {"rgb": (torch.zeros(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)), "short": (torch.zeros(8, 1, 28, 28), torch.zeros(5, dtype=torch.long))}
    if "eval" in kwargs:
        kwargs["eval"] = bad_eval[kwargs["eval"]]
    before = _store_listing()
    with pytest.raises(CompressionError) as err:
        nbmodelpack.compress(ref, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert _store_listing() == before


def test_eval_that_crashes_the_model_is_a_clear_error(trained, data):
    parent = nbmodelpack.pack(MLP(hidden=8), "tiny", example=torch.zeros(1, 1, 28, 28))
    before = _store_listing()
    with pytest.raises(ModelPackError, match="eval"):
        nbmodelpack.compress(parent.ref, quantize="int8", eval=[(torch.zeros(4, 1, 27, 27), torch.zeros(4))])
    assert _store_listing() == before


def test_cli_compress_prints_report_and_refuses_bad_scheme(trained, data, cli, tmp_path):
    _, (x, _y) = data
    parent = nbmodelpack.pack(trained["mlp"], "mlp", example=x[:1])
    ok = cli("compress", parent.ref, "--quantize", "int8", "--png", str(tmp_path / "c.png"), check=True)
    assert "smaller" in ok.stdout and "drift" in ok.stdout
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    as_json = json.loads(cli("compress", parent.ref, "--quantize", "int4", "--json", check=True).stdout)
    assert as_json["ref"] == "mlp:3" and as_json["ratio"] > 5
    bad = cli("compress", parent.ref, "--quantize", "int3")
    assert bad.returncode == CompressionError.exit_code and bad.stderr.strip().startswith("error: compression: unknown scheme")
    assert "Traceback" not in bad.stderr
    assert [i.ref for i in nbmodelpack.ls("mlp")] == ["mlp:3", "mlp:2", "mlp:1"]


def test_notebook_verb_evaluates_on_a_notebook_variable(trained, data):
    from nbmodelpack import commands

    class Notebook(commands.Context):  # what %modelpack offers: the kernel's variables
        interactive = True

        def __init__(self, names: dict) -> None:
            self.names = names

        def lookup(self, name: str):
            return self.names[name]

    _, (x, y) = data
    parent = nbmodelpack.pack(trained["mlp"], "mlp", example=x[:1])
    report = commands.run(f"compress {parent.ref} --quantize int8 --prune 0.3 --eval held_out", Notebook({"held_out": (x, y)}))
    assert report.child.metric is not None and abs(report.metric_drop) < 2
    assert report.info.ref == "mlp:2" and "<table " in report._repr_html_()


def test_eval_takes_the_callers_data_and_no_demo_dataset_name(trained, data):
    _, (x, _y) = data
    ref = nbmodelpack.pack(trained["mlp"], "mlp", example=x[:1]).ref
    before = _store_listing()
    with pytest.raises(CompressionError, match=r"eval must be a DataLoader or \(x, y\) tensors, not str") as err:
        nbmodelpack.compress(ref, quantize="int8", eval="mnist")
    assert "\n" not in str(err.value)
    assert _store_listing() == before
