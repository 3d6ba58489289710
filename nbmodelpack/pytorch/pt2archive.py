"""Accept only the ``torch.export`` archives (``model.pt2``) our own packer writes.

``torch.export.load`` unpickles legacy ``data/weights/<model>.pt`` and
``data/constants/<model>.pt`` files, sample inputs, weights or constants marked
``use_pickle``, and ``custom_obj_*`` / ``opaque_obj_*`` constants; it feeds the
graph's symbolic shape strings to ``sympy.sympify`` (an ``eval``) and ``exec``\\ s
its ``guards_code`` when the module is built; it resolves each node's target by
``getattr`` from ``torch``. So before torch sees an archive,
every entry must be one our packer writes (an allow-list, not a deny-list):
the archive metadata, ``models/model.json``, empty sample inputs, the two
payload configs naming only plain tensors (weights on the meta device, as we
strip them; constants as raw bytes), and the raw tensor files those configs
name. Shape expressions and guards must parse as plain arithmetic on shapes, and
graph nodes may call only aten ops (none that touch files) and arithmetic.
No torch API does this check; the archive is a plain zip, read with zipfile.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from typing import Any

from ..errors import BundleFormatError, UnsafeFileError

_ROOT = "archive/"
_META_FILES = {"archive_format", "archive_version", ".data/version", "byteorder", ".data/serialization_id"}
_GRAPH = "models/model.json"
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"
_WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
_CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
_PAYLOAD = {"data/weights/": re.compile(r"weight_\d{1,9}"), "data/constants/": re.compile(r"tensor_\d{1,9}")}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_HINT = "re-pack the model with nbmodelpack"

# Names a sympy shape expression may call (sympy classes and torch's sympy functions).
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Mod", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not", "true", "false", "oo", "floor", "ceiling", "Piecewise", "ITE",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift",
    "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
}
# What a guard (Python source that torch exec's) may use: shapes of the inputs, arithmetic, math.
_GUARD_NAMES = {"L", "math", "inf", *_SYMPY_NAMES}
_GUARD_ATTRS = {"size", "stride", "storage_offset", "isnan", "inf", "floor", "ceil", "trunc", "sqrt"}
# torch's symbolic-int helpers, which guards of graphs with dynamic image sizes call
# (``torch.sym_max(1, H // 2)`` after pooling); ``torch`` may appear only as ``torch.<one of these>(...)``.
_TORCH_SYM = {"sym_max", "sym_min", "sym_not", "sym_float", "sym_int", "sym_ite", "sym_sqrt"}
# What a graph node may call. The deserializer resolves a target by getattr from ``torch``,
# ``operator`` or ``math`` (so ``torch.serialization.os.system`` would resolve): only aten and
# higher-order ops, torch's symbolic-int helpers and plain arithmetic pass. The aten ops that
# take a file name (found by scanning every aten schema; a test keeps that list honest) are out.
_TARGET = re.compile(r"torch\.ops\.aten\.([a-z0-9_]+)\.[A-Za-z0-9_]+|torch\.ops\.higher_order\.[a-z0-9_]+|torch\.sym_[a-z_]+|(_operator|math)\.([a-z_]+)")
FILE_OPS = frozenset({"from_file", "save"})
_OPERATORS = {
    "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "pow", "neg", "pos", "abs", "eq", "ne", "lt", "le",
    "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift",
}
_MATH = {"ceil", "floor", "trunc", "sqrt"}
_EXPR_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Constant, ast.Load,
    ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Name, ast.Call, ast.keyword, ast.Tuple,
)
_GUARD_NODES = (*_EXPR_NODES, ast.Subscript, ast.Attribute)


def _refuse(what: str, why: str) -> UnsafeFileError:
    return UnsafeFileError(f"{what} {why}", hint=_HINT)


def _check_python(text: object, what: str, *, guard: bool) -> None:
    """A shape expression (``guard=False``) or guard is plain arithmetic over allowed names."""
    if not isinstance(text, str) or len(text) > 4096:
        raise _refuse(what, "holds a shape expression that is not a short string")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise _refuse(what, "holds a shape expression that does not parse") from exc
    allowed_nodes = _GUARD_NODES if guard else _EXPR_NODES
    names = _GUARD_NAMES if guard else _SYMPY_NAMES
    # sympy and Python evaluate these exactly: `9**9**9` or `1 << 10**9` would run for hours.
    if sum(1 for _ in ast.walk(tree)) > 512:
        raise _refuse(what, "holds a shape expression that is too long")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and abs(node.value) >= 2**63:
            raise _refuse(what, "holds a number too large for a shape in a shape expression")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.LShift | ast.RShift):
            raise _refuse(what, "shifts bits in a shape expression")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and not (
            isinstance(node.right, ast.Constant) and isinstance(node.right.value, int) and 0 <= node.right.value <= 64
        ):
            raise _refuse(what, "raises to a power that is not a small constant in a shape expression")
    sym_calls: set[int] = set()  # the nodes of ``torch.sym_*`` when called, in a guard
    for node in ast.walk(tree) if guard else ():
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch" and func.attr in _TORCH_SYM:
            sym_calls |= {id(func), id(func.value)}
    for node in ast.walk(tree):
        if not isinstance(node, allowed_nodes):
            raise _refuse(what, f"holds code in a shape expression ({type(node).__name__})")
        if isinstance(node, ast.Name) and node.id not in names and id(node) not in sym_calls:
            raise _refuse(what, f"names {node.id[:40]!r} in a shape expression")
        if isinstance(node, ast.Attribute) and node.attr not in _GUARD_ATTRS and id(node) not in sym_calls:
            raise _refuse(what, f"reads .{node.attr[:40]} in a shape expression")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and not _IDENT.fullmatch(node.value):
            raise _refuse(what, "holds a string that is not a name in a shape expression")
        if isinstance(node, ast.Constant) and not isinstance(node.value, str | int | float | bool):
            raise _refuse(what, "holds a constant that is not a number or name in a shape expression")
        if isinstance(node, ast.keyword) and (node.arg is None or not _IDENT.fullmatch(node.arg)):
            raise _refuse(what, "passes ** in a shape expression")


def _check_target(target: object, what: str) -> None:
    """A graph node calls an aten/higher-order op or plain arithmetic, nothing that reaches files or Python."""
    match = _TARGET.fullmatch(target) if isinstance(target, str) else None
    ok = match is not None and match.group(1) not in FILE_OPS
    if ok and match is not None and match.group(2):
        ok = match.group(3) in (_OPERATORS if match.group(2) == "_operator" else _MATH)
    if not ok:
        raise _refuse(what, f"calls {str(target)[:80]!r}, which nbmodelpack does not load")


def _check_graph(doc: Any, what: str) -> None:
    """Every symbolic expression and guard in ``model.json`` is plain shape arithmetic."""
    if not isinstance(doc, dict):
        raise BundleFormatError(f"{what} has an unreadable graph")
    for guard in doc.get("guards_code") or []:
        _check_python(guard, what, guard=True)
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict) and "inputs" in node and "target" in node:
            _check_target(node["target"], what)
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str":
                    _check_python(value, what, guard=False)
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _numel(meta: dict[str, Any], what: str) -> int:
    sizes = meta.get("sizes")
    if not isinstance(sizes, list):
        raise _refuse(what, "has a tensor without sizes")
    numel = 1
    for size in sizes:
        value = size.get("as_int") if isinstance(size, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _refuse(what, "has a tensor with a symbolic or negative size")
        numel *= value
    return numel


def _check_payloads(archive: zipfile.ZipFile, sizes: dict[str, int], config_name: str, base: str, what: str) -> set[str]:
    """The payload config names only plain tensors stored as raw bytes; return the files it names."""
    try:
        doc = json.loads(archive.read(_ROOT + config_name))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleFormatError(f"{what} has an unreadable {config_name.rsplit('/', 1)[-1]}") from exc
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise BundleFormatError(f"{what} has an unreadable {config_name.rsplit('/', 1)[-1]}")
    named: set[str] = set()
    for fqn, payload in config.items():
        label = f"{what} entry {str(fqn)[:60]!r}"
        if not isinstance(payload, dict) or payload.get("use_pickle") is not False:
            raise _refuse(label, "is stored as a pickle")
        path_name = payload.get("path_name")
        meta = payload.get("tensor_meta")
        if not isinstance(path_name, str) or not _PAYLOAD[base].fullmatch(path_name) or base + path_name not in sizes:
            raise _refuse(label, "is not a plain tensor")
        if not isinstance(meta, dict) or not isinstance(meta.get("device"), dict):
            raise _refuse(label, "has no tensor description")
        numel = _numel(meta, label)
        on_meta = meta["device"].get("type") == "meta"
        # torch allocates zeros for an empty file: only meta tensors (our stripped weights) may be empty.
        if sizes[base + path_name] == 0 and numel and not on_meta:
            raise _refuse(label, "asks for tensor memory the archive does not hold")
        if base == "data/weights/" and not on_meta:
            raise _refuse(label, "carries weights (ours live in model.safetensors)")
        named.add(base + path_name)
    return named


def check_archive(blob: bytes, *, what: str = "model.pt2") -> None:
    """Raise unless ``blob`` is a ``torch.export`` archive with only the entries our packer writes.

    Example:
        >>> check_archive(b"not a zip")
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.BundleFormatError: unreadable bundle: model.pt2 is not a torch.export archive
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        items = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise BundleFormatError(f"{what} is not a torch.export archive") from exc
    sizes: dict[str, int] = {}
    for item in items:
        name = item.filename
        rel = name[len(_ROOT):]
        if not name.startswith(_ROOT) or rel in sizes:
            raise _refuse(what, f"has an unexpected or repeated entry {name[:80]!r}")
        known = rel in _META_FILES or rel in (_GRAPH, _SAMPLE_INPUTS, _WEIGHTS_CONFIG, _CONSTANTS_CONFIG)
        known = known or any(rel.startswith(base) and pattern.fullmatch(rel[len(base):]) for base, pattern in _PAYLOAD.items())
        if not known:
            raise _refuse(what, f"has an entry nbmodelpack does not write ({rel[:80]})")
        if item.compress_type != zipfile.ZIP_STORED or item.flag_bits & 0x1:
            raise _refuse(what, f"has a compressed or encrypted entry ({rel[:80]})")
        if rel in _META_FILES and item.file_size > 64:
            raise _refuse(what, f"has an oversized {rel}")
        sizes[rel] = item.file_size
    missing = [n for n in (_GRAPH, _SAMPLE_INPUTS, _WEIGHTS_CONFIG, _CONSTANTS_CONFIG, "archive_version") if n not in sizes]
    if missing:
        raise BundleFormatError(f"{what} lacks {missing[0]}", hint=_HINT)
    if sizes[_SAMPLE_INPUTS]:
        raise _refuse(what, "carries pickled sample inputs")
    named = _check_payloads(archive, sizes, _WEIGHTS_CONFIG, "data/weights/", what)
    named |= _check_payloads(archive, sizes, _CONSTANTS_CONFIG, "data/constants/", what)
    stray = [n for n in sizes if any(n.startswith(base) for base in _PAYLOAD) and n not in named and n not in (_WEIGHTS_CONFIG, _CONSTANTS_CONFIG)]
    if stray:
        raise _refuse(what, f"has a payload no config names ({stray[0]})")
    try:
        graph = json.loads(archive.read(_ROOT + _GRAPH))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleFormatError(f"{what} has an unreadable graph") from exc
    _check_graph(graph, what)


def strip_pickles(blob: bytes) -> bytes:
    """Rewrite a fresh ``torch.export.save`` archive with empty sample inputs, then check it.

    Example:
        >>> strip_pickles(archive_bytes)  # doctest: +SKIP
    """
    src = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            dst.writestr(item, b"" if item.filename.endswith("/" + _SAMPLE_INPUTS) else src.read(item))
    cleaned = out.getvalue()
    check_archive(cleaned, what="the exported graph")
    return cleaned
