"""Fine-tuning a loaded bundle: fit lowers the loss, pack records the parent, cards keep metrics honest."""

from __future__ import annotations

import pytest
import torch
from models import MLP

import nbmodelpack
from nbmodelpack.bundle.card import Card
from nbmodelpack.bundle.metrics import labelled, sectioned
from nbmodelpack.errors import UsageError
from nbmodelpack.labapi import views
from nbmodelpack.notebook.display import bundle_card_html, bundle_table_html


def _loader(n: int = 256, seed: int = 0, classes: int = 10) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = x.flatten(1)[:, :classes].argmax(1)  # learnable: which of the first pixels is largest
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)


@pytest.fixture
def parent() -> nbmodelpack.BundleInfo:
    """mnist-mlp:1, trained two epochs with validation data."""
    torch.manual_seed(0)
    model = MLP(hidden=32)
    nbmodelpack.fit(model, _loader(), val_loader=_loader(128, seed=1), epochs=2, optimizer=torch.optim.Adam(model.parameters(), lr=0.01))
    return nbmodelpack.pack(model, "mnist-mlp", example=torch.zeros(1, 1, 28, 28))


def test_fit_on_a_loaded_bundle_lowers_the_loss_and_packs_as_its_child(parent) -> None:
    loaded = nbmodelpack.load(parent.ref)
    data = _loader(256, seed=2)
    before = nbmodelpack.pytorch.fit.evaluate(loaded, data)["loss"]
    history = nbmodelpack.fit(loaded, data, val_loader=_loader(128, seed=3), epochs=3, optimizer=torch.optim.Adam(loaded.parameters(), lr=0.01))
    assert history["loss"][-1] < history["loss"][0]
    assert nbmodelpack.pytorch.fit.evaluate(loaded, data)["loss"] < before

    child = nbmodelpack.pack(loaded, "mnist-mlp")
    assert child.recipe["op"] == "finetune" and child.recipe["parent"] == parent.digest and child.recipe["parent_ref"] == parent.ref
    assert child.recipe["params"]["epochs"] == 3 and child.recipe["params"]["lr"] == pytest.approx(0.01)
    assert child.parent_line == "finetune of mnist-mlp:1"
    assert child.architecture["class"] == "models:MLP"  # the original architecture, not a graph
    # The child's own metrics, train and validation apart; the parent's only in the lineage, as the parent's.
    assert set(child.metrics) == {"train", "validation"} and child.metrics["train"]["epochs"] == 3
    assert child.metrics != parent.metrics
    ancestor = child.recipe["lineage"][-1]
    assert ancestor["ref"] == parent.ref and ancestor["metrics"] == parent.metrics and ancestor["op"] == "pack"

    card = nbmodelpack.card(child.ref)
    front = Card.parse(card).front
    assert front["metrics"] == child.metrics
    assert "| validation | accuracy |" in card and "| train | loss |" in card
    assert "- mnist-mlp:1: pack (its metrics: validation accuracy" in card
    assert "- this version: finetune of mnist-mlp:1 (epochs=3" in card
    shown = str(nbmodelpack.show(child.ref))
    assert "from        finetune of mnist-mlp:1" in shown and "validation accuracy" in shown


def test_training_a_packed_child_again_packs_a_grandchild_with_the_whole_lineage(parent) -> None:
    model = nbmodelpack.load(parent.ref)
    nbmodelpack.fit(model, _loader(128, seed=7), epochs=1)
    child = nbmodelpack.pack(model, "mnist-mlp")
    nbmodelpack.fit(model, _loader(128, seed=8), epochs=2)
    grandchild = nbmodelpack.pack(model, "mnist-mlp")
    assert grandchild.parent_line == f"finetune of {child.ref}" and grandchild.recipe["params"]["epochs"] == 2
    assert [step["ref"] for step in grandchild.recipe["lineage"]] == [parent.ref, child.ref]
    assert grandchild.recipe["lineage"][1]["metrics"] == child.metrics


def test_fit_on_a_loaded_bundle_that_was_not_trained_packs_as_a_plain_child_without_metrics(parent) -> None:
    child = nbmodelpack.pack(nbmodelpack.load(parent.ref), "copy")
    assert child.recipe["op"] == "pack" and child.recipe["parent"] == parent.digest
    assert child.metrics == {}  # never the parent's as its own


def test_finetune_replaces_the_head_freezes_by_pattern_and_the_child_loads_as_its_class(parent, run_py) -> None:
    frozen_before = nbmodelpack.load(parent.ref).net[1].weight.detach().clone()
    torch.manual_seed(0)
    model = nbmodelpack.finetune(parent.ref, _loader(256, seed=4, classes=5), val_data=_loader(128, seed=5, classes=5), head=5, freeze="net.1.*", epochs=3, lr=0.01)
    assert isinstance(model, MLP) and model.net[3].out_features == 5 and model.classes == 5
    assert torch.equal(model.net[1].weight, frozen_before)  # frozen: not trained
    assert not model.net[1].weight.requires_grad and model.net[3].weight.requires_grad
    assert model.fit_history["loss"][-1] < model.fit_history["loss"][0]

    child = nbmodelpack.pack(model, "digits-5", example=torch.zeros(1, 1, 28, 28))
    params = child.recipe["params"]
    assert child.recipe["op"] == "finetune" and child.parent_line == "finetune of mnist-mlp:1"
    assert params["head"] == 5 and params["freeze"] == "net.1.*" and params["head_layer"] == "net.3"
    assert params["frozen_parameters"] == 784 * 32 + 32
    arch = nbmodelpack.get_store().open(child.ref).read_json("architecture.json")
    assert arch["strategy"] == "class" and arch["kwargs"] == {"hidden": 32, "classes": 5}

    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want = model(x)
    out = run_py(
        "import torch, nbmodelpack\n"
        f"m = nbmodelpack.load({child.ref!r})\n"
        "x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(9))\n"
        "print(type(m).__name__, m.classes, m(x).detach().flatten().tolist())\n"
    ).stdout.split(maxsplit=2)
    assert out[:2] == ["MLP", "5"]
    assert torch.allclose(torch.tensor(eval(out[2])), want.flatten(), atol=1e-5)  # noqa: S307 - a list of floats we printed


def test_finetune_bad_arguments_are_one_line_errors(parent) -> None:
    data = _loader(64)
    cases = [
        ({"freeze": "nothing.*"}, "freeze nothing.*: no parameter name matches"),
        ({"freeze": "*"}, "leaves nothing to train"),
        ({"head": 0}, "head=0: give the number of classes"),
        ({"lr": 0}, "lr=0: the learning rate must be positive"),
        ({"epochs": 0}, "epochs=0: train at least one epoch"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UsageError, match=message) as err:
            nbmodelpack.finetune(parent.ref, data, **kwargs)
        assert "\n" not in str(err.value)


def test_compressed_child_shows_only_its_own_measured_metrics(parent) -> None:
    report = nbmodelpack.compress(parent.ref, quantize="int8", eval=_loader(128, seed=1))
    child = nbmodelpack.show(report.info.ref)
    assert set(child.metrics) == {"compression", "validation"}
    assert child.metrics["validation"] == {"accuracy": pytest.approx(report.child.metric, abs=1e-3)}
    assert "train" not in child.metrics  # the parent's training run is not the child's
    assert child.recipe["lineage"][-1]["metrics"] == parent.metrics
    assert "its metrics: validation accuracy" in nbmodelpack.card(child.ref)


def test_metrics_are_labelled_in_the_notebook_card_listing_and_sidebar(parent) -> None:
    loaded = nbmodelpack.load(parent.ref)
    nbmodelpack.fit(loaded, _loader(128, seed=6), epochs=1)
    child = nbmodelpack.show(nbmodelpack.pack(loaded, "mnist-mlp").ref)
    html = bundle_card_html(child)
    assert "<b>train metrics</b>" in html and "validation metrics" not in html  # this fit had no validation data
    assert "its metrics: validation accuracy" in html and "finetune of <code>mnist-mlp:1</code>" in html
    table = bundle_table_html(nbmodelpack.ls())
    assert "validation accuracy" in table and "finetune of mnist-mlp:1" in table
    summary = views.version_summary(child, {})
    assert summary["derived"] == "finetune of mnist-mlp:1" and summary["parent_ref"] == parent.ref
    assert set(summary["metrics"]) == {"train loss", "train accuracy", "train epochs"}
    lineage = views.bundle_detail("mnist-mlp", "2")["detail"]["lineage"]
    assert lineage[0]["text"].startswith("mnist-mlp:1: pack (its metrics: validation")
    assert lineage[-1]["text"] == "this version: finetune of mnist-mlp:1 (epochs=1, lr=0.001, optimizer=Adam)"


def test_cards_written_with_a_flat_metrics_dict_still_read_and_are_labelled() -> None:
    flat = {"loss": 0.3, "accuracy": 91.0, "val_loss": 0.4, "val_accuracy": 90.0, "epochs": 2}
    assert sectioned(flat) == {"train": {"loss": 0.3, "accuracy": 91.0, "epochs": 2}, "validation": {"loss": 0.4, "accuracy": 90.0}}
    assert list(labelled({"accuracy": 97.5})) == ["reported accuracy"]
    info = nbmodelpack.pack(MLP(hidden=8), "given", metrics={"accuracy": 97.5})
    assert info.metrics == {"accuracy": 97.5}  # kept as given
    assert "| reported | accuracy | 97.5 |" in nbmodelpack.card(info.ref)


def test_fit_on_a_loaded_export_graph_lowers_the_loss_and_its_pack_names_the_parent() -> None:
    class Local(torch.nn.Module):  # not importable, not in __main__: load gives the export graph
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    parent = nbmodelpack.pack(Local(), "local", example=torch.zeros(1, 1, 28, 28))
    loaded = nbmodelpack.load(parent.ref)
    assert getattr(loaded, "bundle_form", None) == "graph"  # a class of this test's own: no other form fits
    history = nbmodelpack.fit(loaded, _loader(256, seed=2), epochs=3, optimizer=torch.optim.Adam(loaded.parameters(), lr=0.01))
    assert history["loss"][-1] < history["loss"][0]
    child = nbmodelpack.pack(loaded, "local", example=torch.zeros(1, 1, 28, 28))
    assert child.parent_line == "finetune of local:1" and set(child.metrics) == {"train"}
    assert "GraphModule" not in str(child.architecture.get("class")), child.architecture
