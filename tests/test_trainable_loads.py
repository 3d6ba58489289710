"""A loaded bundle is the model again: trainable in a fresh process, its own class where it is defined.

Models are defined in ``__main__`` of a packing process (as in a notebook), then loaded
by fresh processes that never saw them (``run_py``).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

import nbmodelpack
from nbmodelpack.errors import ArchitectureError

# What a notebook cell defines: the seed's MLP, a CNN with adaptive pooling, an LSTM classifier.
MAIN_MODELS = textwrap.dedent("""
    import torch
    from torch import nn

    class SeedMLP(nn.Module):
        def __init__(self, hidden: int = 64):
            super().__init__()
            self.hidden = hidden
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, 10))

        def forward(self, x):
            return self.net(x)

    class PoolCNN(nn.Module):
        def __init__(self, channels: int = 4):
            super().__init__()
            self.channels = channels
            self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(channels, 5)

        def forward(self, x):
            return self.head(self.pool(self.features(x)).flatten(1))

    class LSTMClassifier(nn.Module):
        def __init__(self, vocab: int = 50, dim: int = 16, classes: int = 3):
            super().__init__()
            self.vocab, self.dim, self.classes = vocab, dim, classes
            self.embed = nn.Embedding(vocab, dim)
            self.lstm = nn.LSTM(dim, dim, batch_first=True)
            self.head = nn.Linear(dim, classes)

        def forward(self, ids):
            out, _ = self.lstm(self.embed(ids))
            return self.head(out[:, -1])
""")

# name -> (constructor, example used at pack, eval input, input of another size or None)
CASES = {
    "seed-mlp": ("SeedMLP(32)", "torch.randn(2, 1, 28, 28)", "torch.randn(5, 1, 28, 28)", "torch.randn(7, 1, 28, 28)"),
    "pool-cnn": ("PoolCNN(4)", "torch.randn(2, 3, 32, 32)", "torch.randn(3, 3, 32, 32)", "torch.randn(2, 3, 20, 24)"),
    "lstm": ("LSTMClassifier()", "torch.randint(0, 50, (2, 12))", "torch.randint(0, 50, (4, 12))", "torch.randint(0, 50, (6, 30))"),
}

# Runs in a fresh process: load, then check every trainable-model property; print them as JSON.
CHECK = textwrap.dedent("""
    import json, sys, torch, nbmodelpack
    from nbmodelpack.pytorch.restore import form_note
    io = torch.load(sys.argv[1], weights_only=True)
    m = nbmodelpack.load(io["ref"], trust_code=io.get("trust", False))
    out = {"form": m.bundle_form, "type": type(m).__name__, "note": form_note(m), "eval_training": m.training}
    with torch.no_grad():
        out["matches"] = bool(torch.allclose(m(io["x"]), io["y"], rtol=1e-4, atol=1e-5))
        out["other_size"] = list(m(io["other"]).shape) if "other" in io else None
    m.train()
    out["train_training"] = m.training
    out["requires_grad"] = all(p.requires_grad for p in m.parameters())
    before = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = m(io["x"]).float().pow(2).mean()
    loss.backward()
    opt.step()
    out["changed"] = any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))
    m.eval()
    with torch.no_grad():
        out["eval_deterministic"] = bool(torch.equal(m(io["x"]), m(io["x"])))
    print(json.dumps(out))
""")


def _pack_in_main(run_py, tmp_path: Path, names: list[str]) -> None:
    """Pack each case from a process where the classes live in ``__main__``; save inputs and outputs."""
    lines = [MAIN_MODELS, "import nbmodelpack", "torch.manual_seed(0)"]
    for name in names:
        build, example, x, other = CASES[name]
        lines.append(textwrap.dedent(f"""
            m = {build}.eval()
            info = nbmodelpack.pack(m, {name!r}, example={example})
            x = {x}
            with torch.no_grad():
                torch.save({{"ref": info.ref, "x": x, "y": m(x), "other": {other}}}, {str(tmp_path / f"{name}.pt")!r})
        """))
    run_py("\n".join(lines))


def _check(run_py, io_file: Path) -> dict:
    proc = run_py(f"import sys; sys.argv = ['check', {str(io_file)!r}]\n" + CHECK)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_notebook_models_load_trainable_in_a_fresh_process(run_py, tmp_path):
    _pack_in_main(run_py, tmp_path, list(CASES))
    for name in CASES:
        got = _check(run_py, tmp_path / f"{name}.pt")
        assert got["form"] == "graph", (name, got)
        assert got["note"].startswith(f"loaded {name}:1 as an export graph (trainable); define class")
        assert got["eval_training"] is False and got["train_training"] is True, (name, got)
        assert got["requires_grad"] and got["changed"] and got["matches"] and got["eval_deterministic"], (name, got)
    # the image size was 32x32 at pack time; the graph takes 20x24 and any batch size
    assert _check(run_py, tmp_path / "pool-cnn.pt")["other_size"] == [2, 5]
    assert _check(run_py, tmp_path / "seed-mlp.pt")["other_size"] == [7, 10]
    # the LSTM saw 12 time steps at pack time; the graph takes 30
    assert _check(run_py, tmp_path / "lstm.pt")["other_size"] == [6, 3]


@pytest.mark.slow
def test_train_mode_switches_dropout_on_a_loaded_graph(run_py, tmp_path):
    _pack_in_main(run_py, tmp_path, ["seed-mlp"])
    code = textwrap.dedent("""
        import torch, nbmodelpack
        m = nbmodelpack.load("seed-mlp:1")
        x = torch.randn(64, 1, 28, 28)
        assert torch.equal(m(x), m(x))
        m.train()
        assert not torch.equal(m(x), m(x)), "dropout is off in train mode"
        print("ok")
    """)
    assert run_py(code).stdout.strip() == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("builder, size, other", [("resnet18", 64, 48), ("mobilenet_v3_small", 64, 96)])
def test_torchvision_models_load_trainable_in_a_fresh_process(run_py, tmp_path, builder, size, other):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, builder)(num_classes=7).eval()
    info = nbmodelpack.pack(model, builder.replace("_", "-"), example=torch.randn(2, 3, size, size))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.save({"ref": info.ref, "x": x, "y": model(x), "other": torch.randn(3, 3, other, other)}, tmp_path / "io.pt")
    got = _check(run_py, tmp_path / "io.pt")
    assert got["form"] == "class" and got["type"] in ("ResNet", "MobileNetV3")
    assert got["matches"] and got["requires_grad"] and got["changed"] and got["other_size"] == [3, 7]
    assert got["eval_training"] is False and got["train_training"] is True


def _marked_class(marker: Path) -> str:
    """Source of a notebook-style class that appends to ``marker`` whenever its definition runs."""
    return textwrap.dedent(f"""
        class Marked(nn.Module):
            open({str(marker)!r}, "a").write("x")  # runs whenever this class definition is executed

            def __init__(self, n: int = 4):
                super().__init__()
                self.n = n
                self.l = nn.Linear(n, 2)

            def forward(self, x):
                return self.l(x)
    """)


@pytest.mark.slow  # fresh Python processes importing torch
def test_class_defined_in_the_loading_process_comes_back_as_itself_without_running_bundle_code(run_py, tmp_path):
    marker = tmp_path / "ran.txt"
    script = tmp_path / "notebook.py"  # a file, so the packer finds the class source and stores it
    script.write_text(MAIN_MODELS + "import os, nbmodelpack\n\n" + _marked_class(marker) + textwrap.dedent(f"""
        info = nbmodelpack.pack(Marked(6), "marked", example=torch.randn(2, 6))
        assert nbmodelpack.get_store().open(info.ref).has("model_src.py")
        os.remove({str(marker)!r})
        m = nbmodelpack.load("marked:1")
        assert isinstance(m, Marked) and m.bundle_form == "live class" and m.n == 6
        assert not os.path.exists({str(marker)!r}), "bundle code ran"
        print("ok")
    """))
    proc = run_py(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')")
    assert proc.stdout.strip().splitlines()[-1] == "ok"


@pytest.mark.slow  # fresh Python processes importing torch
def test_stored_source_of_a_delivered_bundle_runs_only_with_trust_code(run_py, tmp_path, home):
    marker = tmp_path / "ran.txt"
    script = tmp_path / "notebook.py"
    sender = tmp_path / "sender-home"
    script.write_text("import os, torch, nbmodelpack\nfrom torch import nn\n\n" + _marked_class(marker) + textwrap.dedent(f"""
        nbmodelpack.pack(Marked(), "marked", example=torch.randn(2, 4))
        nbmodelpack.export("marked:1", {str(tmp_path / "marked.tar")!r})
        os.remove({str(marker)!r})
    """))
    run_py(f"import os, runpy; os.environ['NBMODELPACK_HOME'] = {str(sender)!r}; runpy.run_path({str(script)!r}, run_name='__main__')")
    nbmodelpack.import_(tmp_path / "marked.tar")  # delivered to this store, unsigned
    load = "import nbmodelpack; m = nbmodelpack.load('marked:1'{}); print(type(m).__name__, m.bundle_form)"
    assert run_py(load.format("")).stdout.split() == ["GraphModule", "graph"]
    assert not marker.exists(), "stored source ran without trust_code"
    assert run_py(load.format(", trust_code=True")).stdout.split() == ["Marked", "source"]
    assert marker.exists()  # the same bundle does run its source once trusted: the check above can fail


@pytest.mark.slow  # fresh Python processes importing torch
def test_repacking_a_loaded_graph_keeps_the_original_class(run_py, tmp_path):
    _pack_in_main(run_py, tmp_path, ["seed-mlp"])
    loaded = nbmodelpack.load("seed-mlp:1")
    assert loaded.bundle_form == "graph"
    info = nbmodelpack.pack(loaded, "seed-mlp", example=torch.randn(2, 1, 28, 28))
    assert info.architecture["class"] == "__main__:SeedMLP"
    arch = nbmodelpack.get_store().open(info.ref).read_json("architecture.json")
    assert arch["kwargs"] == {"hidden": 32}


@pytest.mark.slow  # the first torch.export of a process takes seconds
def test_a_submodule_named_meta_is_refused_at_pack_with_one_line_and_no_version(home):
    class WithMeta(torch.nn.Module):  # a local class: only the export graph can carry it
        def __init__(self) -> None:
            super().__init__()
            self.meta = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.meta(x)

    with pytest.raises(ArchitectureError) as err:
        nbmodelpack.pack(WithMeta(), "with-meta", example=torch.randn(2, 4))
    assert "would not load back" in str(err.value) and "'meta'" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    assert nbmodelpack.ls() == []


@pytest.mark.slow  # fresh Python processes importing torch
def test_a_submodule_named_meta_in_an_importable_class_packs_and_loads_in_a_fresh_process(run_py, tmp_path):
    from models import WithMeta

    model = WithMeta(5).eval()
    info = nbmodelpack.pack(model, "with-meta", example=torch.randn(2, 5))
    assert info.architecture == {"strategy": "class", "class": "models:WithMeta", "load": "models:WithMeta (class)"}
    x = torch.randn(3, 5)
    with torch.no_grad():
        torch.save({"ref": info.ref, "x": x, "y": model(x)}, tmp_path / "io.pt")
    got = _check(run_py, tmp_path / "io.pt")
    assert got["form"] == "class" and got["type"] == "WithMeta" and got["matches"] and got["changed"]


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"])
def test_mnasnets_pack_and_load_in_a_fresh_process(run_py, tmp_path, builder):
    import torchvision

    model = getattr(torchvision.models, builder)(num_classes=4).eval()
    info = nbmodelpack.pack(model, builder.replace("_", "-"), example=torch.randn(2, 3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.save({"ref": info.ref, "x": x, "y": model(x)}, tmp_path / "io.pt")
    got = _check(run_py, tmp_path / "io.pt")
    assert got["form"] == "class" and got["matches"]


@pytest.mark.slow
def test_tiny_transformers_model_loads_in_a_fresh_process_with_another_sequence_length(run_py, tmp_path):
    import transformers
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, num_labels=3
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    info = nbmodelpack.pack(model, "tiny-bert", example=torch.randint(0, 100, (2, 16)))
    ids = torch.randint(0, 100, (3, 24))
    with torch.no_grad():
        torch.save({"ids": ids, "logits": model(ids).logits}, tmp_path / "io.pt")
    code = textwrap.dedent(f"""
        import torch, nbmodelpack
        io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
        m = nbmodelpack.load({info.ref!r})
        out = m(io["ids"])
        assert torch.allclose(out["logits"], io["logits"], rtol=1e-4, atol=1e-5)
        print(m.bundle_form)
    """)
    assert run_py(code).stdout.strip() == "graph"


@pytest.mark.slow
def test_fit_on_a_loaded_graph_lowers_the_loss_and_repacks_as_the_original_class(home):
    class Local(torch.nn.Module):  # local: packed as an export graph, loads back as one here
        def __init__(self, hidden: int = 16) -> None:
            super().__init__()
            self.hidden = hidden
            self.net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(hidden, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    torch.manual_seed(0)
    nbmodelpack.pack(Local(), "local", example=torch.randn(4, 8))
    loaded = nbmodelpack.load("local:1")
    assert loaded.bundle_form == "graph"
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    history = nbmodelpack.fit(loaded, batches, epochs=5, optimizer=torch.optim.Adam(loaded.parameters(), lr=1e-2))
    assert history["loss"][-1] < history["loss"][0]
    assert loaded.training is False  # fit leaves the model in eval mode, and the graph says so
    info = nbmodelpack.pack(loaded, "local", example=torch.randn(4, 8))
    assert info.architecture["class"] == nbmodelpack.show("local:1").architecture["class"]


@pytest.mark.parametrize("kind", [torch.nn.LSTM, torch.nn.GRU])
def test_recurrent_graph_takes_other_sequence_lengths_and_trains(kind):
    import io as _io

    from nbmodelpack.pytorch.exporting import export_archive
    from nbmodelpack.pytorch.graph import trainable
    from nbmodelpack.pytorch.pt2archive import check_archive
    from nbmodelpack.pytorch.restore import put_weights

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(50, 16)
            self.rnn = kind(16, 8, num_layers=2, batch_first=True, bidirectional=True, dropout=0.3)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, ids):
            out, _ = self.rnn(self.embed(ids))
            return self.head(out[:, -1])

    torch.manual_seed(0)
    model = Tagger().eval()
    blob = export_archive(model, torch.randint(0, 50, (2, 12)))
    check_archive(blob)
    graph = trainable(put_weights(torch.export.load(_io.BytesIO(blob)).module(), dict(model.state_dict())))
    longer = torch.randint(0, 50, (5, 30))
    with torch.no_grad():
        assert torch.allclose(graph(longer), model(longer), atol=1e-6)
    graph.train()
    assert not torch.equal(graph(longer), graph(longer)), "dropout between layers is off in train mode"
    graph(torch.randint(0, 50, (3, 7))).sum().backward()
    assert graph.rnn.weight_ih_l0.grad is not None and graph.rnn.weight_ih_l0.grad.abs().sum() > 0
