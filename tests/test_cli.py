"""The `modelpack` command: every foundation verb, good and bad input, one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from models import MLP

import nbmodelpack


@pytest.fixture
def packed(home):
    torch.manual_seed(0)
    return nbmodelpack.pack(MLP(hidden=8), "mnist-mlp", example=torch.randn(1, 1, 28, 28), metrics={"accuracy": 91.0})


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert lines and lines[0].startswith("error: ")
    return lines[0]


def test_ls_lists_versions_as_table_and_json(cli, packed):
    proc = cli("ls", check=True)
    assert "mnist-mlp:1" in proc.stdout and "REF" in proc.stdout
    rows = json.loads(cli("ls", "--json", check=True).stdout)
    assert rows[0]["ref"] == "mnist-mlp:1" and rows[0]["metrics"] == {"accuracy": 91.0}


def test_show_prints_info_json_and_card(cli, packed):
    assert json.loads(cli("show", "mnist-mlp:1", "--json", check=True).stdout)["digest"] == packed.digest
    assert cli("show", "mnist-mlp", "--card", check=True).stdout.startswith("---\nname: mnist-mlp")


def test_tag_rm_and_gc(cli, packed):
    cli("tag", "mnist-mlp:1", "prod", check=True)
    assert "prod" in nbmodelpack.show("mnist-mlp:prod").tags
    assert "removed mnist-mlp:1" in cli("rm", "mnist-mlp:prod", check=True).stdout
    assert nbmodelpack.ls() == []
    assert "removed 6 blobs" in cli("gc", "--grace", "0", check=True).stdout  # manifest, config, card, weights, architecture, signature


def test_fsck_reports_damage_with_exit_code_1(cli, packed):
    assert cli("fsck", check=True).stdout.startswith("ok")
    weights = next(layer["digest"] for layer in packed.layers if layer["filepath"] == "model.safetensors")
    path = nbmodelpack.get_store().blob_path(weights)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    proc = cli("fsck")
    assert proc.returncode == 1 and "damaged: model.safetensors" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "error: unknown verb 'frobnicate'"),
        (["show"], "error: the following arguments are required: ref"),
        (["show", "Bad Ref"], "error: bad reference"),
        (["show", "missing:3"], "error: bundle not found: missing:3"),
        (["import-pth", "/nonexistent.pth", "--name", "x", "--arch", "models:MLP"], "error: no such file"),
        (["import-pth", "/dev/null", "--name", "x", "--arch", "models:MLP", "--arch-kwargs", "{bad"], "error: --arch-kwargs is not valid JSON"),
        (["export", "mnist-mlp:1"], "error: give exactly one of -o FILE.tar or --dir DIR"),
        (["import", "/nonexistent.tar"], "error: no such file"),
    ],
)
def test_bad_input_gives_one_error_line_and_no_traceback(cli, packed, args, message):
    proc = cli(*args)
    assert proc.returncode in (1, 2)
    assert _one_error_line(proc).startswith(message)


def test_help_shows_usage_per_verb(cli):
    assert "usage: modelpack" in cli("help", check=True).stdout
    assert "usage: modelpack tag" in cli("tag", "-h", check=True).stdout


def test_export_tar_is_an_oci_layout_that_skopeo_reads_and_import_restores(cli, packed, tmp_path):
    tar = tmp_path / "mnist.tar"
    cli("export", "mnist-mlp:1", "-o", str(tar), check=True)
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{tar}:mnist-mlp:1"], capture_output=True, text=True, check=True).stdout
    assert json.loads(raw)["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    nbmodelpack.rm("mnist-mlp:1")
    nbmodelpack.gc(grace_seconds=0)
    cli("import", str(tar), check=True)
    info = nbmodelpack.show("mnist-mlp:1")
    assert info.digest == packed.digest
    x = torch.randn(2, 1, 28, 28)
    assert nbmodelpack.load("mnist-mlp:1")(x).shape == (2, 10)


def test_store_is_an_oci_layout_skopeo_inspects(packed, home):
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{home / 'store'}:mnist-mlp:1"], capture_output=True, text=True, check=True).stdout
    assert json.loads(raw)["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"


def test_skopeo_copies_an_exported_layout(cli, packed, tmp_path):
    cli("export", "mnist-mlp:1", "--dir", str(tmp_path / "layout"), check=True)
    subprocess.run(["skopeo", "copy", "-q", f"oci:{tmp_path / 'layout'}:mnist-mlp:1", f"oci:{tmp_path / 'copy'}:mnist-mlp:1"], check=True, capture_output=True)
    nbmodelpack.rm("mnist-mlp:1")
    infos = nbmodelpack.import_(tmp_path / "copy")
    assert [i.digest for i in infos] == [packed.digest]
    assert shutil.which("skopeo")


def test_import_pth_via_cli(cli, tmp_path):
    torch.save(MLP(hidden=8).state_dict(), tmp_path / "w.pth")
    proc = cli("import-pth", str(tmp_path / "w.pth"), "--name", "legacy", "--arch", "models:MLP", "--arch-kwargs", '{"hidden": 8}', check=True)
    assert "legacy:1" in proc.stdout


def test_a_broken_config_toml_is_one_line_and_left_as_it_was(cli, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[remotes.team\nurl = 'oci://x'\n")
    for args in (["remote", "ls"], ["remote", "add", "other", "file:///tmp/other-share"]):
        proc = cli(*args)
        assert proc.returncode == 2
        assert _one_error_line(proc).startswith("error: ") and "config.toml is not valid TOML" in proc.stderr
    assert (home / "config.toml").read_text() == "[remotes.team\nurl = 'oci://x'\n"


def test_a_remotes_entry_that_is_not_a_table_is_one_line(cli, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('remotes = "oops"\n')
    proc = cli("remote", "ls")
    assert proc.returncode == 2 and "[remotes] is not a table" in _one_error_line(proc)


def test_help_of_every_verb_is_plain_usage_without_history():
    from nbmodelpack import commands
    from nbmodelpack.serving import verbs  # noqa: F401 - the serving door's verbs

    assert {"serve", "servers", "stop", "containerize", "ls", "pack", "publish"} <= set(commands.VERBS)
    for name in commands.VERBS:
        text = str(commands.run(["help", name]))
        assert text.startswith(f"usage: modelpack {name}") and "issue" not in text.lower(), name


def test_verbs_return_data_the_cli_renders_as_text_and_json(packed):
    from nbmodelpack import commands
    from nbmodelpack.commands.render_text import render

    listed = commands.run("ls")
    assert isinstance(listed, commands.BundleList) and listed[0].digest == packed.digest
    assert render(listed, as_json=False).startswith("REF")
    assert json.loads(render(listed, as_json=True))[0]["ref"] == "mnist-mlp:1"
    assert render(commands.run("fsck"), as_json=False) == "ok: every blob matches its digest"
    assert render(commands.BundleList(), as_json=False).startswith("no bundles")


def test_ls_and_show_say_where_a_version_was_published(cli, packed):
    from nbmodelpack.remote import published

    published.record(nbmodelpack.get_store(), packed.digest, "team/mnist-mlp:1")
    assert nbmodelpack.show("mnist-mlp:1").published == ["team/mnist-mlp:1"]
    assert nbmodelpack.ls()[0].published == ["team/mnist-mlp:1"]
    assert "published" in nbmodelpack.show("mnist-mlp:1").badges
    assert json.loads(cli("show", "mnist-mlp:1", "--json", check=True).stdout)["published"] == ["team/mnist-mlp:1"]


def test_cli_errors_use_flags_and_commands_not_python_keywords(cli, packed, tmp_path):
    _, recipient = nbmodelpack.keygen_age(tmp_path / "away" / "k.txt")
    sealed = nbmodelpack.encrypt(packed.ref, recipients=[recipient]).ref
    line = _one_error_line(cli("decrypt", sealed))
    assert "--identity FILE" in line and "identity=" not in line
    assert "`modelpack ls`" in _one_error_line(cli("show", "missing:3"))
    # The Python API keeps Python's spelling.
    with pytest.raises(nbmodelpack.CryptoError, match="identity=FILE"):
        nbmodelpack.decrypt(sealed)


def test_a_refused_option_is_spelled_for_the_door_it_came_through(cli, packed):
    # Raised once, in the API's words; the CLI re-spells the same refusal as flags.
    with pytest.raises(nbmodelpack.CompressionError, match=r"pass quantize= \(int8, int4, fp16 or bf16\) and/or prune=FRACTION"):
        nbmodelpack.compress(packed.ref)
    line = _one_error_line(cli("compress", packed.ref))
    assert "--quantize (int8, int4, fp16 or bf16) and/or --prune FRACTION" in line and "quantize=" not in line
    with pytest.raises(nbmodelpack.CompressionError, match=r"e\.g\. prune=0\.5, structured=True"):
        nbmodelpack.compress(packed.ref, structured=True)


def _string_texts(node: object) -> list[str]:
    """The strings in an expression; an f-string as one text, its fields as ``{}``."""
    import ast

    texts, inside = [], set()
    for n in ast.walk(node):  # type: ignore[arg-type]
        if isinstance(n, ast.JoinedStr):
            inside.update(id(v) for v in n.values)
            texts.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.values))
    texts += [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in inside]  # type: ignore[arg-type]
    return texts


def test_messages_raised_below_the_doors_never_name_a_cli_flag():
    """The API speaks Python (``key=PUB``); commands/spelling.py turns that into ``--key PUB`` for the CLI and magic."""
    import ast

    flag = re.compile(r"(?<![\w`-])--[a-z][a-z0-9-]*")
    package = Path(nbmodelpack.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.parent.name == "commands" or path.name in ("cli.py", "magics.py", "__main__.py"):
            continue  # the doors themselves
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            is_error = isinstance(node.func, ast.Name) and node.func.id.endswith("Error")
            parts = [*node.args, *(k.value for k in node.keywords if k.arg == "hint")] if is_error else [k.value for k in node.keywords if k.arg == "hint"]
            for part in parts:
                for text in _string_texts(part):
                    if flag.search(re.sub(r"`[^`]*`", "", text)):  # a whole command in backquotes is fine
                        found.append(f"{path.relative_to(package)}:{node.lineno}: {text[:80]}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("api", "cli_words"),
    [
        ('pass recipients=["age1…"] (or identity=nbmodelpack.Passphrase(...))', "pass --to age1… (or --passphrase)"),
        ("pull it under another name with as_name=NAME", "pull it under another name with --as NAME"),
        ('give a FILE.tar, or export with format="dir"', "give a FILE.tar, or export with --dir DIR"),
        ("model_name='3d unet' is not a model name", "--model-name '3d unet' is not a model name"),
        ("port=0 for any free one; drop int8_kernel=", "--port 0 for any free one; drop --int8-kernel"),
    ],
)
def test_api_words_become_the_clis_flags(api, cli_words):
    from nbmodelpack.commands.spelling import spell

    assert spell(api, "modelpack") == cli_words
    assert spell(api, "python") == api


def test_a_mistyped_verb_or_flag_gets_did_you_mean_and_that_verbs_usage(cli):
    assert _one_error_line(cli("shwo", "x:1")) == "error: unknown verb 'shwo' (did you mean `modelpack show`?)"
    proc = cli("ls", "--jsn")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "error: unrecognized arguments: --jsn (did you mean --json?)"
    assert lines[1].startswith("usage: modelpack ls")


def test_serve_takes_trust_code_to_serve_a_bundle_that_needs_it(cli):
    from nbmodelpack.serving.options import OPTIONS_ENV, ServeOptions
    from nbmodelpack.serving.runner import _cli_args, probe

    class Gated(torch.nn.Module):  # a data-dependent branch: only its stored source rebuilds it
        def __init__(self, n: int = 4) -> None:
            super().__init__()
            self.l = torch.nn.Linear(n, n)

        def forward(self, x):
            return self.l(x) if x.sum() > 0 else -self.l(x)

    nbmodelpack.pack(Gated(), "gated", example=torch.randn(2, 4), trust_code=True)
    with pytest.raises(nbmodelpack.ArchitectureError, match="trust"):
        probe(ServeOptions(ref="gated:1"))
    loaded = probe(ServeOptions(ref="gated:1", trust_code=True))  # what every worker does
    assert loaded.module(torch.ones(1, 4)).shape == (1, 4)
    options = ServeOptions(ref="gated:1", trust_code=True, passphrase="never on argv")
    assert "--trust-code" in _cli_args(options) and "never on argv" not in " ".join(_cli_args(options))
    assert "never on argv" not in options.to_env()[OPTIONS_ENV]
    assert "--trust-code" in cli("help", "serve", check=True).stdout


def test_the_sidebars_serve_takes_an_identity_or_a_passphrase_not_both(packed):
    from nbmodelpack.labapi.actions import _key, perform

    assert _key({"ref": "m:1", "identity": "/keys/me.txt"}) == "/keys/me.txt"
    assert isinstance(_key({"ref": "m:1", "passphrase": "s3cret"}), nbmodelpack.Passphrase)
    assert _key({"ref": "m:1"}) is None
    for body in ({"ref": packed.ref, "identity": "/k.txt", "passphrase": "p"}, {"ref": packed.ref, "identity": 3}):
        with pytest.raises(nbmodelpack.UsageError) as err:
            perform("serve", body)
        assert err.value.http_status == 400


def test_encrypt_without_to_encrypts_to_me_and_says_so(cli, packed, home):
    assert "no age identity" in _one_error_line(cli("encrypt", packed.ref))  # none yet: one line, nothing written
    assert [i.ref for i in nbmodelpack.ls()] == ["mnist-mlp:1"]
    made = cli("keygen", "--age", check=True).stdout
    mine = made.split("recipient: ")[1].strip()
    proc = cli("encrypt", packed.ref, check=True)
    assert proc.stderr.startswith(f"encrypting to you ({mine[:16]}…") and "--to" in proc.stderr
    sealed = nbmodelpack.show("mnist-mlp:2")
    assert sealed.recipe["params"]["recipients"] == [mine]
    nbmodelpack.load(sealed.ref)  # the default keys open it


def test_keygen_beside_notebooks_warns_in_one_line(cli, tmp_path, monkeypatch):
    (tmp_path / "01-train.ipynb").write_text("{}")
    monkeypatch.chdir(tmp_path)
    proc = cli("keygen", "--age", "mykey.txt", check=True)
    warning = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(warning) == 1 and warning[0].startswith("warning: mykey.txt puts a private key beside the notebooks")
    elsewhere = tmp_path / "keys-only"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli("keygen", "--age", "k.txt", check=True).stderr == ""
