"""int8 bundles: weight-only by default (batch-independent), dynamic only on request, honest about what stays float."""

from __future__ import annotations

import re

import pytest
import safetensors.torch
import torch
from models import MLP, TiedLM
from torch import nn

import nbmodelpack
from nbmodelpack import commands
from nbmodelpack.errors import CompressionError, UsageError
from nbmodelpack.pytorch import qplan
from nbmodelpack.pytorch.int8dynamic import Int8Linear
from nbmodelpack.pytorch.quantize import dequantize_state, quantize_state
from nbmodelpack.serving.options import ServeOptions, validate


def _mlp_child(**compress_kwargs):
    torch.manual_seed(0)
    parent = nbmodelpack.pack(MLP(hidden=32), "mlp", example=torch.randn(1, 1, 28, 28))
    return parent, nbmodelpack.compress(parent.ref, quantize="int8", **compress_kwargs)


def _weight_only_reference(parent_ref: str, child_ref: str) -> nn.Module:
    """The parent with its Linear weights replaced by int8 → float, computed here from the stored tensors."""
    ref = nbmodelpack.load(parent_ref)
    with torch.no_grad():
        for layer in (m for m in ref.modules() if isinstance(m, nn.Linear)):
            amax = layer.weight.abs().amax(dim=1, keepdim=True)
            scale = (amax / 127).clamp(min=torch.finfo(torch.float32).tiny)
            layer.weight.copy_(torch.round(layer.weight / scale).clamp(-127, 127) * scale)
    return ref


def test_default_int8_load_is_weight_only_and_an_item_gets_the_same_output_alone_or_in_any_batch():
    parent, report = _mlp_child()
    child = nbmodelpack.load(report.info.ref)
    assert not any(isinstance(m, Int8Linear) for m in child.modules())
    torch.manual_seed(1)
    item = torch.randn(1, 1, 28, 28)
    batch = torch.cat([item, 50 * torch.randn(63, 1, 28, 28)])  # loud neighbours move a per-batch activation scale
    with torch.no_grad():
        alone, inside = child(item)[0], child(batch)[0]
        torch.testing.assert_close(inside, alone, rtol=1e-5, atol=1e-6)
        # Exactly the weight-only model, built here without the library's quantizer.
        torch.testing.assert_close(child(batch), _weight_only_reference(parent.ref, report.info.ref)(batch), rtol=1e-5, atol=1e-6)
        dynamic = nbmodelpack.load(report.info.ref, int8_kernel="dynamic")
        # The dynamic kernel is what made outputs depend on the batch: the test can tell the two apart.
        assert (dynamic(batch)[0] - dynamic(item)[0]).abs().max() > 100 * (inside - alone).abs().max() + 1e-4


def test_compress_measures_the_dynamic_kernel_when_asked_records_it_and_load_follows_unless_overridden():
    x, y = torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,))
    _, report = _mlp_child(int8_kernel="dynamic", eval=(x, y))
    info = nbmodelpack.show(report.info.ref)
    assert info.recipe["params"]["int8_kernel"] == "dynamic"
    assert "dynamic int8 kernel" in str(report)
    loaded = nbmodelpack.load(report.info.ref)
    assert any(isinstance(m, Int8Linear) for m in loaded.modules())
    with torch.no_grad():
        top1 = (loaded(x).argmax(1) == y).float().mean().item() * 100
    assert top1 == pytest.approx(report.child.metric, abs=0.01)  # measured on the path users get
    assert not any(isinstance(m, Int8Linear) for m in nbmodelpack.load(report.info.ref, int8_kernel="weight-only").modules())
    _, plain = _mlp_child()
    assert nbmodelpack.show(plain.info.ref).recipe["params"]["int8_kernel"] == "weight-only"


def test_a_bad_int8_kernel_is_one_line_everywhere_and_writes_nothing():
    parent, report = _mlp_child()
    with pytest.raises(UsageError, match="int8 kernel 'fast' is not one of weight-only, dynamic") as err:
        nbmodelpack.load(report.info.ref, int8_kernel="fast")
    assert "\n" not in str(err.value)
    before = [i.ref for i in nbmodelpack.ls()]
    with pytest.raises(UsageError, match="'fast'"):
        nbmodelpack.compress(parent.ref, quantize="int8", int8_kernel="fast")
    with pytest.raises(CompressionError, match="needs quantize='int8'"):
        nbmodelpack.compress(parent.ref, quantize="int4", int8_kernel="dynamic")
    assert [i.ref for i in nbmodelpack.ls()] == before
    with pytest.raises(UsageError, match="int8 kernel 'fast' is not one of"):
        validate(ServeOptions(ref=report.info.ref, int8_kernel="fast"))


def test_notebook_verbs_take_int8_kernel():
    class Notebook(commands.Context):
        interactive = True

        def __init__(self) -> None:
            self.names: dict = {}

        def lookup(self, name: str):
            return self.names[name]

        def bind(self, name: str, value) -> None:
            self.names[name] = value

    parent, _ = _mlp_child()
    ctx = Notebook()
    report = commands.run(f"compress {parent.ref} --quantize int8 --int8-kernel dynamic", ctx)
    assert report.params["int8_kernel"] == "dynamic"
    commands.run(f"load {report.info.ref} as fast", ctx)
    commands.run(f"load {report.info.ref} as exact --int8-kernel weight-only", ctx)
    assert any(isinstance(m, Int8Linear) for m in ctx.names["fast"].modules())
    assert not any(isinstance(m, Int8Linear) for m in ctx.names["exact"].modules())


class _Mixed(nn.Module):
    """Every kind of weight the plan knows, plus one it does not."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.up = nn.ConvTranspose1d(8, 6, 3)
        self.pos = nn.Parameter(torch.randn(5, 8))  # a bare matrix: no layer says which dim is the output
        self.head = nn.Linear(6, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(ids) + self.pos[: ids.shape[1]])
        return self.head(self.up(h.transpose(1, 2)).mean(-1))


def test_plan_quantizes_every_known_weight_per_output_channel_and_names_what_stays_float():
    transformers = pytest.importorskip("transformers")
    conv1d = transformers.pytorch_utils.Conv1D(6, 4)  # a Linear(4 → 6) stored as [in, out]
    torch.manual_seed(0)
    model = nn.ModuleDict({"mixed": _Mixed(), "c": conv1d})
    p = qplan.plan(model, model.state_dict())
    assert p.targets == {
        "mixed.embed.weight": 0, "mixed.rnn.weight_ih_l0": 0, "mixed.rnn.weight_hh_l0": 0,
        "mixed.up.weight": 1, "mixed.head.weight": 0, "c.weight": 1,
    }  # fmt: skip
    assert list(p.skipped) == ["mixed.pos"] and "kept float" in p.skipped["mixed.pos"]
    state = {k: v.detach() for k, v in model.state_dict().items()}
    for scheme, step in (("int8", 127), ("int4", 7)):
        stored, meta = quantize_state(state, p.targets, scheme, group_size=4)
        back = dequantize_state(stored, meta)
        for name, axis in p.targets.items():
            w = state[name]
            # Error per element at most half a step of its own output channel's scale (int4: of its group, ≤ the channel's).
            amax = w.movedim(axis, 0).reshape(w.shape[axis], -1).abs().amax(1)
            bound = (amax / step / 2 + 1e-6).reshape([-1 if d == axis else 1 for d in range(w.dim())])
            assert back[name].shape == w.shape and ((back[name] - w).abs() <= bound * 1.01).all(), (scheme, name)


def test_compress_report_lists_what_int8_left_float_in_text_html_and_card():
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (2, 5))
    parent = nbmodelpack.pack(_Mixed(), "mixed", example=ids)
    report = nbmodelpack.compress(parent.ref, quantize="int8", example=ids)
    assert report.left_float == {"pos": report.left_float["pos"]}
    assert "left in float (1 tensor):" in str(report) and "pos: not the weight of" in str(report)
    assert "pos: not the weight of" in report._repr_html_()
    assert "left_float" in nbmodelpack.card(report.info.ref) and "kept float" in nbmodelpack.card(report.info.ref)
    stored = safetensors.torch.load(nbmodelpack.get_store().open(report.info.ref).plaintext("model.safetensors"))
    int8 = {name for name, t in stored.items() if t.dtype == torch.int8}
    assert int8 == {"embed.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "up.weight", "head.weight"}
    assert report.child.drift_max is not None and report.child.drift_max < 0.05


def test_tied_embedding_and_projection_are_quantized_once_and_stay_tied():
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 7))
    parent = nbmodelpack.pack(TiedLM(), "tied", example=ids)
    report = nbmodelpack.compress(parent.ref, quantize="int8", example=ids)
    assert report.left_float == {}
    child = nbmodelpack.load(report.info.ref)
    assert child.proj.weight is child.embed.weight
    assert report.child.weight_bytes < 0.4 * report.parent.weight_bytes


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"shape": [3, 2], "dtype": "float32", "axis": "1"}, "bad quantization axis"),
        ({"shape": [3, 2], "dtype": "float32", "axis": 7}, "bad quantization axis"),
        ({"shape": [2, 3], "dtype": "float32", "axis": 1}, "stored as [2, 3], recorded as [3, 2]"),
        ({"shape": ["x", 2], "dtype": "float32"}, "malformed quantization record"),
    ],
)
def test_a_quantization_record_that_does_not_fit_its_tensors_is_refused_in_one_line(record, message):
    from nbmodelpack.errors import BundleFormatError

    stored, _ = quantize_state({"w": torch.randn(2, 3)}, {"w": 0}, "int8")
    with pytest.raises(BundleFormatError, match=re.escape(message)) as err:
        dequantize_state(stored, {"scheme": "int8", "tensors": {"w": record}})
    assert "\n" not in str(err.value)
