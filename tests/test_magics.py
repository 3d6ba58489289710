"""`%modelpack` driven through a real IPython InteractiveShell: every verb, good and bad input."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from models import MLP

import nbmodelpack
from nbmodelpack.bundle.info import BundleInfo
from nbmodelpack.notebook.display import bundle_card_html, bundle_table_html


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "nbmodelpack")
    return sh


class Run:
    def __init__(self, ok: bool, out: str, err: str) -> None:
        self.ok, self.out, self.err = ok, out, err

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def run(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]):
    """Run one cell; return whether it succeeded and what it printed."""
    names = set(shell.user_ns)

    def go(cell: str) -> Run:
        capsys.readouterr()
        result = shell.run_cell(cell)
        captured = capsys.readouterr()
        return Run(result.success, captured.out, captured.err)

    yield go
    for name in set(shell.user_ns) - names:
        shell.user_ns.pop(name, None)


def one_line_error(r: Run, starts: str) -> str:
    """The cell failed with exactly one line (no traceback) that starts with ``starts``."""
    assert not r.ok
    assert "Traceback" not in r.text
    lines = [ln for ln in r.text.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(starts), lines[0]
    return lines[0]


def _loaders(n: int = 256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1)).long()  # learnable: the index of the largest of 10 pixels
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=64), torch.utils.data.DataLoader(ds, batch_size=128)


# ---- loading ------------------------------------------------------------------------------------
def test_loading_the_extension_imports_neither_torch_nor_widgets(run_py) -> None:
    out = run_py(
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "sh = InteractiveShell.instance()\n"
        "sh.run_line_magic('load_ext', 'nbmodelpack')\n"
        "print('after load:', sorted(m for m in ('torch', 'ipywidgets', 'matplotlib', 'nbmodelpack.store') if m in sys.modules))\n"
        "sh.run_cell('%modelpack ls')\n"
        "sh.run_cell('%modelpack help pack')\n"
        "print('heavy:', sorted(m for m in ('torch', 'ipywidgets', 'matplotlib') if m in sys.modules))\n"
    ).stdout
    assert "after load: []" in out  # the verbs and the store load on first use
    assert "heavy: []" in out
    assert "no bundles" in out and "usage: %modelpack pack" in out


# ---- help and parse errors ----------------------------------------------------------------------
def test_help_and_question_mark_show_usage_from_the_parser(run) -> None:
    r = run("%modelpack?")
    assert "usage: %modelpack" in r.out and "load" in r.out and "train" in r.out
    r = run("%modelpack help load")
    assert r.ok and "usage: %modelpack load" in r.out and "[as] [VAR]" in r.out
    r = run("%modelpack pack -h")
    assert r.ok and "--example VAR" in r.out
    r = run("%modelpack")
    assert r.ok and "usage: %modelpack [-h] VERB" in r.out


def test_unknown_verb_is_one_usage_line(run) -> None:
    line = one_line_error(run("%modelpack bogus"), "error: unknown verb 'bogus'")
    assert "pack" in line and "load" in line  # the hint lists the verbs


def test_unknown_help_topic_is_one_line(run) -> None:
    one_line_error(run("%modelpack help nope"), "error: unknown verb 'nope'")


def test_parse_error_shows_the_usage_line_not_a_traceback(run) -> None:
    for cell, first, verb in [
        ("model = 1\n%modelpack pack model", "error: the following arguments are required: --name", "pack"),
        ("%modelpack train m --data d --epochs many", "error: argument --epochs: invalid int value: 'many'", "train"),
    ]:
        r = run(cell)
        assert not r.ok and "Traceback" not in r.text
        lines = r.text.strip().splitlines()
        assert lines[0] == first  # one line that says what is wrong, then the verb's usage
        assert lines[1].startswith(f"usage: %modelpack {verb}") and all(ln.startswith(" ") for ln in lines[2:])
    one_line_error(run('%modelpack show "unclosed'), "error: cannot split the line")


# ---- pack ---------------------------------------------------------------------------------------
def test_pack_42_is_one_line_and_writes_nothing(run, home: Path) -> None:
    one_line_error(run("%modelpack pack 42 --name x"), "error: '42' is not a variable name")
    one_line_error(run("n = 42\n%modelpack pack n --name x"), "error: n is a int, not a torch.nn.Module")
    assert nbmodelpack.ls() == []
    assert [p for p in home.rglob("*") if p.is_file() and "blobs" in p.parts] == []


def test_missing_variables_are_one_line(run) -> None:
    one_line_error(run("%modelpack pack nomodel --name x"), "error: no variable 'nomodel' in this notebook")
    r = run("from models import MLP\nm = MLP(hidden=8)\n%modelpack pack m --name x --example nothing")
    one_line_error(r, "error: no variable 'nothing'")
    one_line_error(run("%modelpack pack m --name x --labels 5"), "error: '5' is not a variable name")
    one_line_error(run("bad = 'abc'\n%modelpack pack m --name x --labels bad"), "error: --labels bad is a str")
    one_line_error(run("%modelpack pack m --name Bad_Name"), "error: bad reference: 'Bad_Name'")
    assert nbmodelpack.ls() == []


def test_pack_ls_show_tag_rm_gc_fsck_through_the_magic(run, shell: InteractiveShell, tmp_path: Path) -> None:
    shell.user_ns.update(model=MLP(hidden=8), example=torch.zeros(1, 1, 28, 28), digits=list(range(10)))
    r = run('%modelpack pack model --name tiny --example example --labels digits --metrics \'{"accuracy": 97.5}\' --description "a <tiny> net" --tag best')
    assert r.ok, r.text
    assert r.out.startswith("tiny:1") and "reported accuracy 97.5" in r.out
    info = nbmodelpack.show("tiny:1")
    assert info.metrics == {"accuracy": 97.5} and "best" in info.tags and info.description == "a <tiny> net"

    r = run("%modelpack ls")
    assert r.ok and "tiny:1" in r.out and "REF" in r.out
    r = run("%modelpack ls tiny --json")
    assert r.ok and json.loads(r.out)[0]["ref"] == "tiny:1"
    r = run("%modelpack show tiny:best")
    assert r.ok and "digest      sha256:" in r.out
    r = run("%modelpack show tiny:1 --card")
    assert r.ok and "accuracy" in r.out
    r = run("%modelpack tag tiny:1 prod")
    assert r.ok and "prod" in nbmodelpack.show("tiny:prod").tags
    r = run(f"%modelpack export tiny:1 -o {tmp_path / 'tiny.tar'}")
    assert r.ok and (tmp_path / "tiny.tar").is_file()
    r = run("%modelpack fsck")
    assert r.ok and r.out.startswith("ok")
    r = run("%modelpack rm tiny:1")
    assert r.ok and "removed" in r.out and nbmodelpack.ls() == []
    r = run("%modelpack gc --grace 0")
    assert r.ok and r.out.startswith("removed")
    r = run(f"%modelpack import {tmp_path / 'tiny.tar'}")
    assert r.ok and "tiny:1" in r.out
    one_line_error(run("%modelpack show tiny:9"), "error: bundle not found: tiny:9")
    one_line_error(run("%modelpack export tiny:1"), "error: give exactly one of -o FILE.tar or --dir DIR")


def test_import_pth_through_the_magic(run, tmp_path: Path) -> None:
    pth = tmp_path / "old.pth"
    torch.save(MLP(hidden=8).state_dict(), pth)
    r = run(f"%modelpack import-pth {pth} --name legacy --arch models:MLP --arch-kwargs '{{\"hidden\": 8}}'")
    assert r.ok, r.text
    assert nbmodelpack.show("legacy:1").architecture["class"] == "models:MLP"
    one_line_error(run(f"%modelpack import-pth {tmp_path / 'none.pth'} --name legacy --arch models:MLP"), "error: no such file")


# ---- load ---------------------------------------------------------------------------------------
def test_load_binds_the_default_or_the_named_variable(run, shell: InteractiveShell) -> None:
    model = MLP(hidden=8)
    nbmodelpack.pack(model, "mnist-mlp", example=torch.zeros(1, 1, 28, 28))
    r = run("%modelpack load mnist-mlp:1")
    assert r.ok and r.out.startswith("loaded mnist-mlp:1 as mnist_mlp")
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(shell.user_ns["mnist_mlp"](x), model.eval()(x))
    r = run("%modelpack load mnist-mlp:latest as net")
    assert r.ok and isinstance(shell.user_ns["net"], torch.nn.Module)


def test_bad_load_lines_bind_nothing(run, shell: InteractiveShell) -> None:
    nbmodelpack.pack(MLP(hidden=8), "mnist-mlp")
    one_line_error(run("%modelpack load mnist-mlp:1 net"), "error: expected `load REF as VAR`")
    one_line_error(run("%modelpack load mnist-mlp:1 as class"), "error: 'class' is not a valid variable name")
    one_line_error(run("%modelpack load nothing:3 as gone"), "error: bundle not found: nothing:3")
    assert "gone" not in shell.user_ns and "net" not in shell.user_ns


def test_terminal_only_context_refuses_notebook_verbs(cli) -> None:
    proc = cli("pack", "model", "--name", "x")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: `pack` works on notebook variables (use %modelpack in a notebook, or the Python API)"


# ---- train --------------------------------------------------------------------------------------
def test_train_verb_trains_and_its_metrics_reach_the_next_pack(run, shell: InteractiveShell) -> None:
    torch.manual_seed(0)
    train, val = _loaders()
    shell.user_ns.update(model=MLP(hidden=16), train=train, val=val)
    r = run("%modelpack train model --data train --val val --epochs 2 --lr 0.01")
    assert r.ok, r.text
    assert "fit MLP: epoch 2" in r.out and "kept epoch 2" in r.out
    assert r.out.count("kept epoch 2") == 1 and "`" not in r.out  # the summary once, no literal markdown
    assert r.out.strip().splitlines()[-1] == "next: %modelpack pack model --name NAME records these metrics on the card"
    r = run("%modelpack pack model --name trained")
    assert r.ok, r.text
    metrics = nbmodelpack.show("trained:1").metrics
    assert metrics["train"]["epochs"] == 2 and set(metrics["train"]) >= {"loss", "accuracy"} and set(metrics["validation"]) == {"loss", "accuracy"}


def test_train_bad_arguments_are_one_line(run, shell: InteractiveShell) -> None:
    train, _ = _loaders()
    shell.user_ns.update(model=MLP(hidden=8), train=train, n=3)
    one_line_error(run("%modelpack train model --data train --epochs 0"), "error: --epochs 0: train at least one epoch")
    one_line_error(run("%modelpack train model --data train --lr -1"), "error: --lr -1.0")
    one_line_error(run("%modelpack train model --data n"), "error: train_loader is a int, not an iterable")
    one_line_error(run("%modelpack train n --data train"), "error: n is a int, not a torch.nn.Module")
    one_line_error(run("%modelpack train model --data nope"), "error: no variable 'nope'")


class _InterruptingLoader:
    """A real SIGINT (what a kernel interrupt sends) in the middle of epoch ``at_epoch``."""

    def __init__(self, loader, model: torch.nn.Module, at_epoch: int, at_batch: int = 2) -> None:
        self.loader, self.model, self.at_epoch, self.at_batch = loader, model, at_epoch, at_batch
        self.epoch = 0
        self.state_at_start: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.epoch += 1
        if self.epoch == self.at_epoch:
            self.state_at_start = {k: v.clone() for k, v in self.model.state_dict().items()}
        for i, batch in enumerate(self.loader):
            if self.epoch == self.at_epoch and i == self.at_batch:
                signal.raise_signal(signal.SIGINT)
            yield batch


def test_interrupted_training_is_one_line_and_keeps_whole_weights(run, shell: InteractiveShell) -> None:
    torch.manual_seed(0)
    train, val = _loaders()
    model = MLP(hidden=16)
    loader = _InterruptingLoader(train, model, at_epoch=2)
    shell.user_ns.update(model=model, train=loader, val=val)
    r = run("%modelpack train model --data train --val val --epochs 3")
    assert r.ok, r.text
    notes = [ln for ln in r.out.splitlines() if "interrupted" in ln and "epoch 2:" in ln]
    assert notes == ["interrupted in epoch 2: kept the weights of epoch 1 " + notes[0].split("epoch 1 ", 1)[1]]
    # the weights are exactly those at the end of epoch 1, not half of epoch 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, loader.state_at_start[key]), key
    assert model._nbmodelpack_metrics["train"]["epochs"] == 1
    assert nbmodelpack.ls() == []


def test_interrupted_pack_is_one_line_and_writes_no_bundle(run, shell: InteractiveShell) -> None:
    class Stubborn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while pack runs the example
            return self.lin(x)

    shell.user_ns.update(stubborn=Stubborn(), ex=torch.zeros(1, 4))
    one_line_error(run("%modelpack pack stubborn --name stubborn --example ex"), "error: interrupted; nothing half-written was kept")
    assert nbmodelpack.ls() == []


# ---- rich display -------------------------------------------------------------------------------
def _info(**kw) -> BundleInfo:
    base = dict(name="mnist-mlp", version=3, digest="sha256:" + "ab" * 32, tags=["3", "latest"], size=431_000, parameters=101_770, precision="float32", created="2026-11-29T00:44:04Z")
    base.update(kw)
    return BundleInfo(**base)


def test_card_html_escapes_text_and_shows_badges_metrics_and_lineage(shell: InteractiveShell) -> None:
    info = _info(
        description="<script>alert(1)</script>",
        metrics={"val_accuracy": 93.55, "<b>": 1},
        recipe={"op": "encrypt", "parent": "sha256:" + "cd" * 32, "params": {"recipients": 1}, "lineage": [{"op": "pack"}, {"op": "compress", "params": {"scheme": "int8"}}]},
        compressed=True, encrypted=True, signed=True, published=["ghcr.example/team"],
        architecture={"class": "__main__:DigitMLP", "strategy": "export"},
    )
    html = bundle_card_html(info)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;" in html and "93.55" in html
    for badge in ("compressed", "encrypted", "signed", "published"):
        assert f'class="nbmp-badge {badge}"' in html
    assert "pack → compress" in html and "scheme=int8" in html and "encrypt" in html
    assert "%modelpack load mnist-mlp:3" in html and "var(--jp-" in html
    assert shell.display_formatter.formatters["text/html"](info) == html


def test_table_html_is_sortable_with_a_load_hint_per_row_and_text_stays_plain() -> None:
    from nbmodelpack.commands import BundleList

    rows = BundleList([_info(), _info(version=2, tags=["2"], name="a<b")])
    html = bundle_table_html(rows)
    assert html.count('<span class="nbmp-hint">%modelpack load ') == 2
    assert "a&lt;b:2" in html and "a<b:2" not in html
    assert 'data-sort="431000"' in html and "<script>" in html
    text = str(rows)
    assert "<" not in text.replace("a<b", "") and "mnist-mlp:3" in text
    assert "no bundles" in bundle_table_html([])


def test_magic_output_has_html_and_plain_text(shell: InteractiveShell) -> None:
    nbmodelpack.pack(MLP(hidden=8), "shown")
    with capture_output() as captured:
        assert shell.run_cell("%modelpack ls").success
        assert shell.run_cell("%modelpack show shown:1").success
    published = [o.data for o in captured.outputs]
    assert [sorted(d) for d in published] == [["text/html", "text/plain"]] * 2
    assert "nbmp-list" in published[0]["text/html"] and published[0]["text/plain"].startswith("REF")
    assert "nbmp-card" in published[1]["text/html"] and published[1]["text/plain"].startswith("shown:1")


def test_notebook_context_looks_up_and_binds_in_the_user_namespace(shell: InteractiveShell) -> None:
    from nbmodelpack.errors import UsageError
    from nbmodelpack.notebook.magics import NotebookContext

    ctx = NotebookContext(shell)
    ctx.bind("bound_here", 5)
    assert shell.user_ns["bound_here"] == 5 and ctx.lookup("bound_here") == 5
    with pytest.raises(UsageError, match="not a valid variable name"):
        ctx.bind("2x", 1)
    del shell.user_ns["bound_here"]


def test_importing_nbmodelpack_in_ipython_shows_bundle_info_as_the_card_without_load_ext(run_py) -> None:
    code = """
import json
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
import nbmodelpack
from nbmodelpack.bundle.info import BundleInfo
info = BundleInfo(name="seen", version=1, digest="sha256:" + "0" * 64)
html = shell.display_formatter.formatters["text/html"]
data, _ = shell.display_formatter.format(info)
print(json.dumps({
    "card": "nbmp-card" in data.get("text/html", ""),
    "registered": html.lookup_by_type(BundleInfo).__module__,
    "magic": "modelpack" in shell.magics_manager.magics["line"],
    "torch": "torch" in __import__("sys").modules,
}))
"""
    seen = json.loads(run_py(code).stdout.strip().splitlines()[-1])
    assert seen == {"card": True, "registered": "nbmodelpack.notebook.formatters", "magic": False, "torch": False}


def test_load_ext_registers_the_table_and_loaded_card(shell: InteractiveShell) -> None:
    from nbmodelpack.commands import BundleList, Loaded

    html = shell.display_formatter.formatters["text/html"]
    assert "nbmp-list" in html(BundleList([_info()]))
    assert "loaded mnist-mlp:3 as net" in html(Loaded("net", _info()))


@pytest.mark.slow
def test_a_kernel_draws_track_with_widgets_and_shows_the_history_as_html() -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    code = "import nbmodelpack\nwith nbmodelpack.track(total=2) as t:\n    t.log(loss=1.0)\n    t.log(loss=0.5)\nprint(type(t._view).__name__)\nt.history"
    nb.cells = [nbformat.v4.new_code_cell(code)]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert any(o.get("text") == "_WidgetView\n" for o in outputs)
    assert "nbmp-history" in outputs[-1]["data"]["text/html"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the curves, left as static output


# ---- keys, spelling, did-you-mean (the magic's own words) ---------------------------------------
def test_load_opens_an_encrypted_bundle_with_identity_from_a_file_or_a_passphrase(run, shell: InteractiveShell, tmp_path: Path, monkeypatch) -> None:
    model = MLP(hidden=8)
    packed = nbmodelpack.pack(model, "secret-mlp", example=torch.zeros(1, 1, 28, 28)).ref
    key, recipient = nbmodelpack.keygen_age(tmp_path / "elsewhere" / "me.txt")  # not in the keys directory
    sealed = nbmodelpack.encrypt(packed, recipients=[recipient]).ref
    line = one_line_error(run(f"%modelpack load {sealed} as net"), "error: ")
    assert "--identity FILE" in line and "identity=" not in line  # the magic's spelling of the way out
    r = run(f"%modelpack load {sealed} as net --identity {key}")
    assert r.ok, r.text
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(shell.user_ns["net"](x), model.eval()(x))
    by_passphrase = nbmodelpack.encrypt(packed, passphrase="open sesame").ref
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "open sesame")
    r = run(f"%modelpack load {by_passphrase} as net2 --passphrase")
    assert r.ok, r.text
    assert torch.equal(shell.user_ns["net2"](x), model.eval()(x))
    one_line_error(run(f"%modelpack load {sealed} --identity {key} --passphrase"), "error: give --identity FILE or --passphrase, not both")


def test_errors_in_the_magic_use_the_magics_spelling(run) -> None:
    line = one_line_error(run("%modelpack show missing-bundle:3"), "error: bundle not found: missing-bundle:3")
    assert "`%modelpack ls`" in line and "`modelpack ls`" not in line


def test_unknown_verbs_and_flags_get_did_you_mean_and_the_verbs_usage(run) -> None:
    one_line_error(run("%modelpack lod mnist-mlp:1"), "error: unknown verb 'lod' (did you mean `%modelpack load`?)")
    r = run("%modelpack load mnist-mlp:1 --identiy k.txt")
    assert not r.ok and "Traceback" not in r.text
    lines = r.text.strip().splitlines()
    assert lines[0] == "error: unrecognized arguments: --identiy k.txt (did you mean --identity?)"
    assert lines[1].startswith("usage: %modelpack load")  # the verb's usage, not every verb's


def test_help_lists_the_notebook_path_before_store_maintenance(run) -> None:
    text = run("%modelpack help").out
    order = [ln.split()[0] for ln in text.splitlines() if ln.startswith("    ") and not ln.startswith("     ")]
    assert order[:5] == ["pack", "load", "train", "ls", "show"]
    for early, late in [("compress", "fsck"), ("publish", "gc"), ("serve", "tag"), ("sign", "import")]:
        assert order.index(early) < order.index(late), order


def test_the_load_line_ls_remote_offers_pulls_then_loads_and_says_so(run, shell: InteractiveShell, tmp_path: Path) -> None:
    model = MLP(hidden=8)
    info = nbmodelpack.pack(model, "my-mlp", example=torch.zeros(1, 1, 28, 28))
    nbmodelpack.add_remote("share", f"file://{tmp_path / 'share'}")
    nbmodelpack.publish(info.ref, "share")
    nbmodelpack.rm(info.ref)
    r = run("%modelpack ls --remote share")
    assert r.ok and "share/my-mlp:1" in r.out
    r = run("%modelpack load share/my-mlp:1 as net")
    assert r.ok, r.text
    assert r.out.splitlines()[0] == "pulled share/my-mlp:1 into the local store; loaded my-mlp:1 as net"
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(shell.user_ns["net"](x), model.eval()(x))
    assert [i.ref for i in nbmodelpack.ls()] == ["my-mlp:1"]


def test_int8_versions_say_int8_and_the_report_and_ls_agree_on_sizes(run, shell: InteractiveShell) -> None:
    from nbmodelpack.compression.report import metric_axis_label

    torch.manual_seed(0)
    nbmodelpack.pack(MLP(hidden=64), "small", example=torch.zeros(1, 1, 28, 28))
    report = nbmodelpack.compress("small:1", quantize="int8")
    child, parent = nbmodelpack.show(report.info.ref), nbmodelpack.show("small:1")
    assert child.precision == "int8" and parent.precision == "float32"
    assert (report.child.bundle_bytes, report.parent.bundle_bytes) == (child.size, parent.size)  # one definition of size
    listing = run("%modelpack ls small").out
    row = next(ln for ln in listing.splitlines() if ln.startswith("small:2"))
    assert "int8" in row
    from nbmodelpack.bundle.format import human_bytes

    assert human_bytes(child.size) in str(report) and human_bytes(child.size) in row
    # The chart's axes say what they measure and in which unit.
    axes = report.figure().axes
    assert [a.get_xlabel() for a in axes][0] == "kB (as `ls` shows)" and all(a.get_xlabel() for a in axes)
    assert metric_axis_label("accuracy", [97.0]) == "top-1 accuracy (%)"


def test_ls_and_compare_tables_size_by_content_so_refs_never_wrap() -> None:
    from nbmodelpack.compression.report import _html
    from nbmodelpack.notebook.dashboard import axis_label

    table = bundle_table_html([_info(name="mnist-mlp-with-a-long-name")])
    assert 'class="nbmp nbmp-scroll"' in table and "table-layout:auto" in table
    assert '<code style="white-space:nowrap">mnist-mlp-with-a-long-name:3</code>' in table
    assert table.count('style="white-space:nowrap" data-sort=') == table.count("<td")
    from nbmodelpack.pytorch.tracking import History

    assert axis_label(["accuracy", "val_accuracy"], History(rows=[{"epoch": 1, "accuracy": 91.5}])) == "accuracy (%)"
    from nbmodelpack.compression.report import Row

    rows = [Row("parent", "mnist-mlp-with-a-long-name:1", 400_000, 390_000, 101_770, 101_770, 97.1, 0.2), Row("int8", "mnist-mlp-with-a-long-name:2", 110_000, 100_000, 101_770, 101_770, 97.0, 0.1)]
    compare = _html("compare", rows, "accuracy", 400_000)
    assert 'overflow-x:auto' in compare and "mnist-mlp-with-a-long-name:2" in compare
    assert compare.count("white-space:nowrap") >= compare.count("<td")  # every cell keeps to one line


def test_the_serve_widget_follows_its_server_and_predict_answers_in_one_line() -> None:
    import subprocess
    import sys
    import time

    from nbmodelpack.serving import handle
    from nbmodelpack.serving.registry import ServerEntry, register

    def fake_server(ref: str) -> tuple[handle.Server, subprocess.Popen]:
        # A registered process that stands for a server: the widget watches the process and the registry.
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        entry = ServerEntry(pid=proc.pid, url="http://127.0.0.1:9", ref=ref, name=ref.split(":")[0], started=time.time())
        register(entry)
        return handle.Server(entry), proc

    srv, proc = fake_server("mnist-mlp:1")
    widget = srv.widget()
    status = widget.children[0]
    assert srv.running and "serving" in status.value
    srv.stop()  # from here
    assert not srv.running and "stopped" in status.value
    assert all(c.disabled for c in widget.children[2].children)
    with pytest.raises(nbmodelpack.ServingError) as err:
        srv.predict([[0.0] * 4])
    assert str(err.value) == "serve: the server for mnist-mlp:1 has stopped (start it again with nbmodelpack.serve('mnist-mlp:1'))"
    proc.wait()

    other, proc2 = fake_server("other:1")  # stopped elsewhere (a terminal, the sidebar, a crash)
    status2 = other.widget().children[0]
    proc2.kill()
    proc2.wait()
    deadline = time.monotonic() + 10
    while "stopped" not in status2.value and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "stopped" in status2.value


# ---- fine-tuning a loaded bundle ----------------------------------------------------------------
def test_train_verb_trains_a_loaded_bundle_and_pack_records_the_parent(run, shell: InteractiveShell) -> None:
    torch.manual_seed(0)
    train, val = _loaders()
    nbmodelpack.pack(MLP(hidden=16), "base")
    shell.user_ns.update(train=train, val=val)
    assert run("%modelpack load base:1 as loaded").ok
    r = run("%modelpack train loaded --data train --val val --epochs 2 --lr 0.01")
    assert r.ok, r.text
    assert "kept epoch 2" in r.out
    assert run("%modelpack pack loaded --name base").ok
    child = nbmodelpack.show("base:2")
    assert child.parent_line == "finetune of base:1" and child.metrics["train"]["epochs"] == 2


def test_finetune_verb_binds_the_model_and_packs_the_child_with_its_lineage(run, shell: InteractiveShell) -> None:
    torch.manual_seed(0)
    train, val = _loaders()
    nbmodelpack.pack(MLP(hidden=16), "base")
    shell.user_ns.update(train=train, val=val)
    r = run("%modelpack finetune base:1 --data train --val val --head 10 --freeze 'net.1.*' --epochs 2 --lr 0.01 --pack tuned as child")
    assert r.ok, r.text
    assert "fine-tuned base:1 as `child`" in r.out and "packed tuned:1 (finetune of base:1)" in r.out
    assert isinstance(shell.user_ns["child"], MLP) and not shell.user_ns["child"].net[1].weight.requires_grad
    info = nbmodelpack.show("tuned:1")
    assert info.recipe["params"]["freeze"] == ["net.1.*"] and set(info.metrics) == {"train", "validation"}


def test_finetune_verb_bad_lines_are_one_line_and_bind_nothing(run, shell: InteractiveShell) -> None:
    train, _ = _loaders()
    nbmodelpack.pack(MLP(hidden=8), "base")
    shell.user_ns.update(train=train)
    one_line_error(run("%modelpack finetune base:1 --data train --freeze 'zz*' as child"), "error: freeze zz*: no parameter name matches")
    one_line_error(run("%modelpack finetune base:1 --data train to child"), "error: expected `finetune REF --data VAR as NAME`")
    assert "child" not in shell.user_ns


def test_pack_with_shard_size_through_the_magic_writes_shards_and_a_bad_size_is_one_line(run, shell: InteractiveShell) -> None:
    shell.user_ns.update(model=MLP(hidden=32))
    r = run("%modelpack pack model --name sharded --shard-size 50kB")
    assert r.ok, r.text
    assert len(nbmodelpack.get_store().open("sharded:1").weight_files()) == 2
    r = run("%modelpack pack model --name sharded --shard-size lots")
    assert not r.ok and "shard_size: 'lots' is not a size" in r.text and "Traceback" not in r.text


def test_once_a_cell_imports_torch_the_export_machinery_is_imported_in_the_background(run_py) -> None:
    out = run_py(
        "import os, sys, threading\n"
        "os.environ.pop('NBMODELPACK_NO_WARMUP', None)\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "sh = InteractiveShell.instance()\n"
        "sh.run_line_magic('load_ext', 'nbmodelpack')\n"
        "sh.run_cell('x = 1')\n"
        "print('before torch:', [t.name for t in threading.enumerate() if t.name == 'nbmodelpack-warm-up'])\n"
        "sh.run_cell('import torch')\n"
        "for t in threading.enumerate():\n"
        "    if t.name == 'nbmodelpack-warm-up':\n"
        "        t.join()\n"
        "print('warm:', 'torch._export.serde.serialize' in sys.modules and 'torch.export._trace' in sys.modules)\n"
    ).stdout
    assert "before torch: []" in out and "warm: True" in out
