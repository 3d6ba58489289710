"""``model.pt2`` archives: only what our packer writes reaches torch.export.load.

Each attack is built for real: a subprocess shows that torch itself runs the
payload when it loads the archive, and the same archive inside a bundle is
refused by ``load`` with the sentinel never appearing.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hostile.craft import rewrite_zip

import nbmodelpack
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.errors import UnsafeFileError
from nbmodelpack.pytorch.pt2archive import check_archive


class _System:
    """Unpickling this runs ``touch <path>``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: D105
        return (os.system, (f"touch {self.path}",))


def _payload(sentinel: Path) -> bytes:
    return pickle.dumps(_System(sentinel), protocol=2)


def _pack_exported(name: str) -> str:
    class Local(torch.nn.Module):  # defined in a function: not importable, so packed as an export graph
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)
            self.register_buffer("offset", torch.arange(3.0), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) + self.offset

    info = nbmodelpack.pack(Local(), name, example=torch.randn(2, 4))
    assert info.architecture["strategy"] == "export"
    return info.ref


def _edit_json(entries: dict[str, bytes], name: str, change: Callable[[dict], None]) -> None:
    doc = json.loads(entries[name])
    change(doc)
    entries[name] = json.dumps(doc).encode()


def _attacks(sentinel: Path) -> dict[str, Callable[[dict[str, bytes]], None]]:
    cmd = f"touch {sentinel}"

    def legacy_weights(e: dict[str, bytes]) -> None:
        e["archive/data/weights/model.pt"] = _payload(sentinel)

    def legacy_constants(e: dict[str, bytes]) -> None:
        e["archive/data/constants/model.pt"] = _payload(sentinel)

    def opaque_constant(e: dict[str, bytes]) -> None:
        e["archive/data/constants/opaque_obj_0"] = _payload(sentinel)
        entry = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        _edit_json(e, "archive/data/constants/model_constants_config.json", lambda d: d["config"].update(evil=entry))

    def guards_code(e: dict[str, bytes]) -> None:
        # torch exec's the guards at the first call when the archive has sample inputs (here a pickle-free torch.save of tensors).
        buf = io.BytesIO()
        torch.save(((torch.randn(2, 4),), {}), buf)
        e["archive/data/sample_inputs/model.pt"] = buf.getvalue()
        _edit_json(e, "archive/models/model.json", lambda d: d.update(guards_code=[f"__import__('os').system({cmd!r}) == 0"]))

    return {"legacy-weights": legacy_weights, "legacy-constants": legacy_constants, "opaque-constant": opaque_constant, "guards-code": guards_code}


def test_each_crafted_pt2_runs_code_in_torch_but_is_refused_by_load(home, tmp_path, run_py):
    ref = _pack_exported("victim")
    store = nbmodelpack.get_store()
    parent = store.open(ref)
    good = parent.read("model.pt2")
    check_archive(good)
    crafted: dict[str, tuple[Path, Path, str]] = {}
    for name in _attacks(tmp_path):
        sentinel = tmp_path / f"pwned-{name}"
        archive = tmp_path / f"{name}.pt2"
        archive.write_bytes(rewrite_zip(good, _attacks(sentinel)[name]))
        draft = Draft.from_parent(parent.manifest, name=f"evil-{name}", op="pack")
        draft.replace_layer(store.put_layer("model.pt2", mt.CODE, archive.read_bytes()))
        crafted[name] = (sentinel, archive, store.commit(draft).ref)

    for name, (sentinel, _, child) in crafted.items():
        with pytest.raises(UnsafeFileError) as err:
            nbmodelpack.load(child)
        assert "\n" not in str(err.value), name
        assert not sentinel.exists(), name

    # The attacks are real: torch itself runs every payload (in a throwaway process).
    script = "import torch\n" + "".join(
        f"try:\n    torch.export.load({str(archive)!r}).module()(torch.randn(2, 4))\nexcept Exception:\n    pass\n" for _, archive, _ in crafted.values()
    )
    run_py(script, check=False)
    ran = sorted(name for name, (sentinel, _, _) in crafted.items() if sentinel.exists())
    assert ran == sorted(crafted)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update({"archive/data/aotinductor/model/x.so": b"\x7fELF"}), "does not write"),
        (lambda e: e.update({"archive/extra/note.txt": b"hi"}), "does not write"),
        (lambda e: e.update({"archive/data/sample_inputs/model.pt": b"\x80\x02N."}), "sample inputs"),
        (lambda e: _edit_json(e, "archive/models/model.json", lambda d: d.update(guards_code=["L['x'].__class__ == 1"])), "shape expression"),
        (lambda e: _edit_json(e, "archive/data/constants/model_constants_config.json",
                              lambda d: [p.update(use_pickle=True) for p in d["config"].values()]), "pickle"),
        (lambda e: _edit_json(e, "archive/data/weights/model_weights_config.json",
                              lambda d: [p["tensor_meta"]["device"].update(type="cpu") for p in d["config"].values()]), "memory"),
    ],
    ids=["aoti-library", "extra-file", "pickled-sample-inputs", "dunder-guard", "pickled-constant", "zeros-bomb"],
)
def test_archive_entries_outside_the_allow_list_are_refused(home, change, message):
    good = nbmodelpack.get_store().open(_pack_exported("victim")).read("model.pt2")
    with pytest.raises(UnsafeFileError, match=message):
        check_archive(rewrite_zip(good, change))


def test_symbolic_shape_strings_are_plain_arithmetic(home):
    good = nbmodelpack.get_store().open(_pack_exported("victim")).read("model.pt2")
    graph = json.loads(zipfile.ZipFile(io.BytesIO(good)).read("archive/models/model.json"))
    assert "expr_str" in json.dumps(graph)  # the dynamic batch dimension is symbolic

    def hostile(e: dict[str, bytes]) -> None:
        e["archive/models/model.json"] = e["archive/models/model.json"].replace(
            b'"expr_str": "Symbol(', b'"expr_str": "__import__(\'os\').system(\'true\') or Symbol(', 1
        )

    with pytest.raises(UnsafeFileError, match="shape expression"):
        check_archive(rewrite_zip(good, hostile))


@pytest.mark.parametrize("target", ["torch.serialization.os.system", "torch.ops.aten.save.default", "torch.ops.aten.from_file.default", "builtins.exec", "_operator.attrgetter", "#custom.op"])
def test_graph_nodes_may_call_only_aten_ops_and_arithmetic(home, target):
    good = nbmodelpack.get_store().open(_pack_exported("victim")).read("model.pt2")
    check_archive(good)

    def retarget(e: dict[str, bytes]) -> None:
        def change(d: dict) -> None:
            d["graph_module"]["graph"]["nodes"][0]["target"] = target

        _edit_json(e, "archive/models/model.json", change)

    with pytest.raises(UnsafeFileError, match="which nbmodelpack does not load"):
        check_archive(rewrite_zip(good, retarget))


def test_every_aten_op_that_takes_a_file_name_is_refused():
    from nbmodelpack.pytorch.pt2archive import FILE_OPS

    takes_file = {
        s.name.removeprefix("aten::")
        for s in torch._C._jit_get_all_schemas()
        if s.name.startswith("aten::") and any(str(a.type) in ("str", "Optional[str]") and ("file" in a.name or "path" in a.name) for a in s.arguments)
    }
    assert takes_file and takes_file <= FILE_OPS


def test_a_pooling_cnn_with_dynamic_image_size_passes_and_only_torch_sym_calls_are_allowed_in_guards(home):
    class Pool(torch.nn.Module):  # local: packed as an export graph; H and W stay dynamic through // 2
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.max_pool2d(self.conv(x), 2).flatten(1).sum(1, keepdim=True)

    info = nbmodelpack.pack(Pool(), "pool", example=torch.randn(2, 1, 12, 12))
    good = nbmodelpack.get_store().open(info.ref).read("model.pt2")
    check_archive(good)
    sym_guard = "(torch.sym_max(1, L['args'][0].size()[2] // 2)*torch.sym_max(1, L['args'][0].size()[3] // 2)) != 1"
    check_archive(rewrite_zip(good, lambda e: _edit_json(e, "archive/models/model.json", lambda d: d.update(guards_code=[sym_guard]))))
    for hostile in ["torch.save(L['x'], 'f') == 1", "torch.sym_max.__globals__ == 1", "torch == 1", "torch.sym_max == 1"]:
        edit = lambda e, g=hostile: _edit_json(e, "archive/models/model.json", lambda d: d.update(guards_code=[g]))  # noqa: E731
        with pytest.raises(UnsafeFileError, match="shape expression"):
            check_archive(rewrite_zip(good, edit))


@pytest.mark.parametrize("expr", ["9**9**9", "s0**s1", "1 << 1000000000", str(10**30), " + ".join(["s0"] * 600)])
def test_a_shape_expression_that_would_compute_for_hours_is_refused(expr):
    from nbmodelpack.pytorch.pt2archive import _check_python

    with pytest.raises(UnsafeFileError):
        _check_python(expr, "model.pt2", guard=False)
