"""Craft hostile bundles: real OCI manifests and blobs with every digest recomputed.

Each attack starts from a genuine bundle packed by ``nbmodelpack.pack`` (a
``torch.nn.Linear(8, 4)`` for the ``class`` strategy, a local class exported
with ``torch.export`` for ``model.pt2``), changes what an attacker would
change, and recomputes layer digests, sizes, the config's ``diffIds`` and the
manifest digest so that every integrity check passes: only a policy can refuse.

Every payload, if it ever ran, creates a file in the sentinel directory
(``NBMP_HOSTILE_SENTINELS``); the tests assert that directory stays empty.

How a crafted bundle reaches the victim (a share, a tarball, a registry, or
planted straight into a store) is ``deliver.py``'s job.

The pickles below are hand-written protocol-0 bytes (``GLOBAL os system``,
``REDUCE``): test data only, never produced with ``pickle``.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import zstandard

from nbmodelpack.bundle import mediatypes as mt

SENTINEL_ENV = "NBMP_HOSTILE_SENTINELS"
GIB = 1 << 30
MIB = 1 << 20

# What a test expects of a case at the doors: refused in one line, or either way
# (loaded or refused) as long as nothing ran and nothing outside the store changed.
REFUSE, EITHER, LOADS = "refuse", "either", "loads"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pickle_payload(command: str) -> bytes:
    """Protocol-0 pickle bytes that call ``os.system(command)`` when unpickled (hand-built)."""
    return b"cos\nsystem\n(V" + command.encode("raw_unicode_escape") + b"\ntR."


@dataclass
class Base:
    """A genuine packed bundle, read back as plain JSON and bytes."""

    manifest: dict[str, Any]
    blobs: dict[str, bytes]

    def layer_bytes(self, filepath: str) -> bytes:
        return self.blobs[self.layer(filepath)["digest"]]

    def layer(self, filepath: str) -> dict[str, Any]:
        return next(d for d in self.manifest["layers"] if d["annotations"][mt.FILEPATH] == filepath)


@dataclass
class Crafted:
    """One hostile bundle: its manifest bytes, the blobs it needs, and where it is tagged."""

    case: str
    repo: str  # the bundle name it is published under
    tag: str
    manifest: bytes
    blobs: dict[str, bytes | Path]
    expect: str
    what: str  # one line: the attack
    index_media_type: str = mt.MANIFEST
    extra_tags: list[str] = field(default_factory=list)
    # Files in a share whose blob is a symlink to this target (content-matching digest).
    symlinks: dict[str, Path] = field(default_factory=dict)
    big: bool = False  # hundreds of MiB inflated or streamed: only the bomb tests drive it

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"


# ---- manifest surgery ---------------------------------------------------------------------
def _layer(filepath: str, media_type: str, data: bytes, **annotations: str) -> dict[str, Any]:
    ann = {mt.FILEPATH: filepath, mt.TITLE: filepath, **annotations}
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), "annotations": ann}


def assemble(
    base: Base,
    *,
    replace: dict[str, bytes] | None = None,
    media_types: dict[str, str] | None = None,
    add: tuple[tuple[str, str, bytes], ...] | list[tuple[str, str, bytes]] = (),
    drop: tuple[str, ...] = (),
    summary: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    config_media_type: str | None = None,
    layer_annotations: dict[str, dict[str, str]] | None = None,
) -> tuple[bytes, dict[str, bytes]]:
    """A new manifest from ``base`` with layers replaced/added/dropped; every digest recomputed."""
    replace = replace or {}
    blobs: dict[str, bytes] = {}
    layers = []
    for desc in base.manifest["layers"]:
        fp = desc["annotations"][mt.FILEPATH]
        if fp in drop:
            continue
        data = replace.get(fp, base.blobs[desc["digest"]])
        media = (media_types or {}).get(fp, desc["mediaType"])
        new = _layer(fp, media, data, **(layer_annotations or {}).get(fp, {}))
        layers.append(new)
        blobs[new["digest"]] = data
    for fp, media, data in add:
        new = _layer(fp, media, data)
        layers.append(new)
        blobs[new["digest"]] = data
    config = json.loads(base.blobs[base.manifest["config"]["digest"]])
    config["modelfs"]["diffIds"] = [d["digest"] for d in layers]
    config_raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    blobs[digest_of(config_raw)] = config_raw
    ann = dict(base.manifest.get("annotations", {}))
    if summary is not None:
        old = json.loads(ann.get(mt.SUMMARY, "{}"))
        ann[mt.SUMMARY] = json.dumps({**old, **summary}, sort_keys=True)
    ann.update(annotations or {})
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.MANIFEST,
        "artifactType": mt.ARTIFACT,
        "config": {"mediaType": config_media_type or mt.CONFIG, "digest": digest_of(config_raw), "size": len(config_raw)},
        "layers": layers,
        "annotations": ann,
    }
    return json.dumps(doc, indent=2).encode(), blobs


def renamed(raw: bytes, name: str) -> bytes:
    """The manifest with its summary and title naming ``name`` (what ``import`` names a bundle by)."""
    doc = json.loads(raw)
    summary = json.loads(doc["annotations"].get(mt.SUMMARY, "{}"))
    summary["name"] = name
    doc["annotations"][mt.SUMMARY] = json.dumps(summary, sort_keys=True)
    doc["annotations"][mt.TITLE] = name
    return json.dumps(doc, indent=2).encode()


def _arch(cls: str, kwargs: Any) -> bytes:
    return json.dumps({"strategy": "class", "class": cls, "kwargs": kwargs, "aliases": {}, "torch": "2.14.1"}, indent=1).encode()


def rewrite_zip(blob: bytes, edit: Callable[[dict[str, bytes]], None]) -> bytes:
    """A zip archive with its entries edited (order kept, new ones appended), stored uncompressed like torch's."""
    src = zipfile.ZipFile(io.BytesIO(blob))
    entries = {i.filename: src.read(i) for i in src.infolist()}
    edit(entries)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name, data in entries.items():
            dst.writestr(name, data)
    return out.getvalue()


def _pt2(base: Base, edit: Callable[[dict[str, bytes]], None]) -> bytes:
    """Rewrite the base ``model.pt2`` zip: ``edit`` gets and changes ``{entry name: bytes}``."""
    return rewrite_zip(base.layer_bytes("model.pt2"), edit)


def _zstd_zeros(size: int) -> bytes:
    """zstd frame of ``size`` zero bytes, compressed in chunks (never holds the plain bytes)."""
    out = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=3)
    with cctx.stream_writer(out, closefd=False, size=size) as w:
        chunk = bytes(MIB)
        for _ in range(size // MIB):
            w.write(chunk)
    return out.getvalue()


# ---- the cases -----------------------------------------------------------------------------
def craft_all(linear: Base, exported: Base, sentinels: Path, *, huge_manifest: int = 200 * MIB + 1, bomb: int = GIB) -> list[Crafted]:
    """Every hostile case, built from the two genuine bases; payloads aim at ``sentinels``."""

    def s(name: str) -> str:
        return str(sentinels / name)

    cases: list[Crafted] = []

    def add(case: str, expect: str, what: str, manifest_blobs: tuple[bytes, dict[str, bytes]], **kw: Any) -> None:
        raw, blobs = manifest_blobs
        repo = kw.pop("repo", f"h-{case}")
        if not kw.get("big"):
            raw = renamed(raw, repo)
        cases.append(Crafted(case, repo, kw.pop("tag", "1"), raw, dict(blobs), expect, what, **kw))

    def arch_case(case: str, cls: str, kwargs: Any, what: str, expect: str = REFUSE) -> None:
        # The summary still says Linear: what ls/show display must not come from it.
        add(case, expect, what, assemble(linear, replace={"architecture.json": _arch(cls, kwargs)}))

    # -- the class strategy: only an allow-listed nn.Module subclass may be built
    add("class-linear-control", LOADS, "the genuine Linear bundle (must keep loading)", assemble(linear))
    arch_case("class-subprocess-run", "subprocess:run", {"args": ["touch", s("class-subprocess-run")]}, "class subprocess:run")
    arch_case("class-os-system", "os:system", {"command": f"touch {s('class-os-system')}"}, "class os:system under a Linear summary")
    arch_case("class-builtins-exec", "builtins:exec", {"source": f"open({s('class-builtins-exec')!r}, 'w')"}, "class builtins:exec")
    arch_case("class-builtins-open", "builtins:open", {"file": s("class-builtins-open"), "mode": "w"}, "class builtins:open creates a file")
    arch_case("class-torch-save", "torch:save", {"obj": [1], "f": s("class-torch-save")}, "a torch function with a side effect")
    arch_case("class-import-module", "importlib:import_module", {"name": "hostile.sidefx_import"}, "import_module of a module with an import side effect")
    arch_case("class-sidefx-module", "hostile.sidefx_class:Net", {}, "an nn.Module from a non-allowed module whose import writes")
    arch_case("class-kwargs-object", "torch.nn.modules.linear:Linear", {"in_features": 8, "out_features": 4, "device": {"__class__": "os:system", "args": [f"touch {s('class-kwargs-object')}"]}}, "allowed class, kwargs shaped like an object")
    arch_case("class-kwargs-not-a-dict", "torch.nn.modules.linear:Linear", [8, 4], "kwargs that are not a dict")
    deep = b'{"strategy": "class", "class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": ' + b"[" * 100_000 + b"8" + b"]" * 100_000 + b', "out_features": 4}}'
    add("class-deep-json", REFUSE, "kwargs nested 100,000 deep", assemble(linear, replace={"architecture.json": deep}))

    # -- the modules strategy: every node of the tree is checked like a class target, before any import
    seq = "torch.nn.modules.container:Sequential"
    lin = {"class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": 8, "out_features": 4}}

    def tree_case(case: str, tree: Any, what: str, expect: str = REFUSE) -> None:
        arch = {"strategy": "modules", "class": seq, "tree": tree, "aliases": {}, "torch": "2.14.1"}
        add(case, expect, what, assemble(linear, replace={"architecture.json": json.dumps(arch).encode()}))

    def nested(depth: int) -> dict[str, Any]:
        node: dict[str, Any] = lin
        for _ in range(depth):
            node = {"class": seq, "children": {"0": node}}
        return node

    tree_case("modules-linear-control", lin, "a tree that is one allowed Linear (must keep loading)", LOADS)
    tree_case("modules-subprocess-leaf", {"class": seq, "children": {"0": {"class": "subprocess:run", "kwargs": {"args": ["touch", s("modules-subprocess-leaf")]}}}}, "a Sequential holding subprocess:run")
    tree_case("modules-private-leaf", {"class": seq, "children": {"0": {"class": "torch.testing._internal.common_utils:TestCase", "kwargs": {}}}}, "a leaf in a private torch module")
    tree_case("modules-sidefx-leaf", {"class": seq, "children": {"0": {"class": "hostile.sidefx_class:Net", "kwargs": {}}}}, "a leaf from a non-allowed module whose import writes")
    tree_case("modules-huge-kwargs", {"class": seq, "children": {"0": {**lin, "kwargs": {"in_features": 8, "out_features": 4, "device": list(range(20_000))}}}}, "a leaf with 20,000 kwargs items")
    tree_case("modules-deep-tree", nested(20), "Sequentials nested 20 deep")
    tree_case("modules-leaf-with-children", {"class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": 8, "out_features": 4}, "children": {"x": lin}}, "a leaf that claims children")
    tree_case("modules-child-named-forward", {"class": seq, "children": {"forward": lin}}, "a child named like an attribute of Sequential")

    # -- model.pt2: only the entries our packer writes; no pickle torch would unpickle
    def pt2_case(case: str, what: str, edit: Callable[[dict[str, bytes]], None]) -> None:
        add(case, REFUSE, what, assemble(exported, replace={"model.pt2": _pt2(exported, edit)}))

    def legacy_weights(e: dict[str, bytes]) -> None:
        e.pop("archive/data/weights/model_weights_config.json", None)
        e["archive/data/weights/model.pt"] = pickle_payload(f"touch {s('pt2-legacy-weights')}")

    def legacy_constants(e: dict[str, bytes]) -> None:
        e.pop("archive/data/constants/model_constants_config.json", None)
        e["archive/data/constants/model.pt"] = pickle_payload(f"touch {s('pt2-legacy-constants')}")

    def opaque(e: dict[str, bytes]) -> None:
        # Not marked use_pickle: a uint8 tensor_meta lets torch map the bytes, then it pickle.loads them.
        payload = pickle_payload(f"touch {s('pt2-opaque-obj')}")
        meta = {"dtype": 1, "sizes": [{"as_int": len(payload)}], "requires_grad": False, "device": {"type": "cpu", "index": None}, "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 5}
        weights = json.loads(e["archive/data/weights/model_weights_config.json"])
        sample = next(iter(weights["config"].values()))["tensor_meta"]
        meta = {**sample, **{k: v for k, v in meta.items() if k in sample}}
        e["archive/data/constants/model_constants_config.json"] = json.dumps(
            {"config": {"opaque_obj_0": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False, "tensor_meta": meta}}}
        ).encode()
        e["archive/data/constants/opaque_obj_0"] = payload

    def sample_inputs(e: dict[str, bytes]) -> None:
        e["archive/data/sample_inputs/model.pt"] = pickle_payload(f"touch {s('pt2-sample-inputs')}")

    def custom_objs(e: dict[str, bytes]) -> None:
        e["archive/data/custom_objs/model/obj_0"] = pickle_payload(f"touch {s('pt2-custom-objs')}")

    def use_pickle(e: dict[str, bytes]) -> None:
        cfg = json.loads(e["archive/data/weights/model_weights_config.json"])
        first = next(iter(cfg["config"]))
        cfg["config"][first]["use_pickle"] = True
        e["archive/data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
        e["archive/data/weights/" + cfg["config"][first]["path_name"]] = pickle_payload(f"touch {s('pt2-use-pickle')}")

    def extra_entry(e: dict[str, bytes]) -> None:
        e["archive/extra/payload.pkl.bin"] = pickle_payload(f"touch {s('pt2-extra-entry')}")

    pt2_case("pt2-legacy-weights", "a legacy archive/data/weights/model.pt pickle", legacy_weights)
    pt2_case("pt2-legacy-constants", "a legacy archive/data/constants/model.pt pickle", legacy_constants)
    pt2_case("pt2-opaque-obj", "an opaque_obj_* constant", opaque)
    pt2_case("pt2-sample-inputs", "pickled sample inputs", sample_inputs)
    pt2_case("pt2-custom-objs", "a custom_objs pickle", custom_objs)
    pt2_case("pt2-use-pickle", "a weight marked use_pickle", use_pickle)
    pt2_case("pt2-extra-entry", "an entry the packer never writes", extra_entry)

    # -- stored source without trust_code
    src = f"from pathlib import Path\nPath({s('source-untrusted')!r}).write_text('ran')\nimport torch\n\nclass Net(torch.nn.Linear):\n    def __init__(self):\n        super().__init__(8, 4)\n"
    src_arch = json.dumps({"strategy": "source", "class": "model_src:Net", "kwargs": {}, "file": "model_src.py", "aliases": {}}).encode()
    add("source-untrusted", REFUSE, "stored source whose import writes a file", assemble(linear, replace={"architecture.json": src_arch}, add=[("model_src.py", mt.CODE, src.encode())]))

    # -- manifest shapes that must be refused at parse time
    evil_arch = _arch("os:system", {"command": f"touch {s('dup-architecture')}"})
    add("dup-architecture", REFUSE, "a second architecture.json layer", assemble(linear, add=[("architecture.json", mt.WEIGHT_CONFIG, evil_arch)]))
    escape = "../" * 24 + s("path-dotdot").lstrip("/")
    add("path-dotdot", REFUSE, "a ../ filepath aimed at the sentinel", assemble(linear, add=[(escape, mt.DOC, b"escaped")]))
    add("path-absolute", REFUSE, "an absolute filepath aimed at the sentinel", assemble(linear, add=[(s("path-absolute"), mt.DOC, b"absolute")]))
    add("path-nul", REFUSE, "a NUL byte in a filepath", assemble(linear, add=[("notes\x00.md", mt.DOC, b"nul")]))
    add("path-backslash", REFUSE, "a backslash ..\\ filepath", assemble(linear, add=[("..\\..\\" + "sentinel-backslash", mt.DOC, b"bs")]))
    # Pull refuses it (PARSE_REFUSED); once in a store, loading it may work or not, but runs nothing.
    add("foreign-config", EITHER, "a container image config, not a model", assemble(linear, config_media_type="application/vnd.oci.image.config.v1+json"))
    add("foreign-layer", EITHER, "an extra layer of an executable media type", assemble(linear, add=[("payload.so", "application/x-sharedlib", b"\x7fELF" + bytes(60))]))
    add("zstd-json", REFUSE, "+zstd on a JSON layer", assemble(linear, replace={"architecture.json": zstandard.ZstdCompressor().compress(linear.layer_bytes("architecture.json"))}, media_types={"architecture.json": mt.WEIGHT_CONFIG + mt.ZSTD_SUFFIX}))
    # An image index (manifest list) where a manifest is expected.
    good_raw, good_blobs = assemble(linear)
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.INDEX, "manifests": [{"mediaType": mt.MANIFEST, "digest": digest_of(good_raw), "size": len(good_raw)}]}).encode()
    cases.append(Crafted("image-index", "h-image-index", "1", index, {**good_blobs, digest_of(good_raw): good_raw}, REFUSE, "an OCI image index where a manifest is expected", index_media_type=mt.INDEX))
    # A look-alike name (U+2010 HYPHEN) for a bundle the victim knows.
    add("confusable-name", REFUSE, "mnist\u2010mlp (U+2010) beside mnist-mlp", assemble(linear), repo="mnist\u2010mlp")
    zeros = {k: torch.zeros_like(v) for k, v in safetensors.torch.load(linear.layer_bytes("model.safetensors")).items()}
    add("import-shadow", EITHER, "good:1 again, with other weights (must not replace the victim's good:1)", assemble(linear, replace={"model.safetensors": safetensors.torch.save(zeros, metadata={"format": "pt"})}), repo="good")
    add("huge-tags", EITHER, "one manifest under 20,000 tags", assemble(linear), extra_tags=[f"t{i}" for i in range(20_000)])

    cases += craft_bombs(linear, huge_manifest=huge_manifest, bomb=bomb)
    return cases


def craft_bombs(linear: Base, *, huge_manifest: int = 200 * MIB + 1, bomb: int = GIB) -> list[Crafted]:
    """The two big cases, driven only by the memory tests: a zstd bomb on the weights, a huge manifest."""
    plain = linear.layer_bytes("model.safetensors")
    raw, blobs = assemble(
        linear,
        replace={"model.safetensors": _zstd_zeros(bomb)},
        media_types={"model.safetensors": mt.WEIGHT + mt.ZSTD_SUFFIX},
        layer_annotations={"model.safetensors": {mt.PLAIN_SIZE: str(len(plain))}},
    )
    out = [Crafted("zstd-bomb", "h-zstd-bomb", "1", renamed(raw, "h-zstd-bomb"), dict(blobs), REFUSE, f"zstd of {bomb >> 20} MiB of zeros on the weight layer", big=True)]
    raw, blobs = assemble(linear, summary={"name": "h-huge-manifest"}, annotations={"dev.nbmodelpack.padding": "x" * huge_manifest})
    out.append(Crafted("huge-manifest", "h-huge-manifest", "1", raw, dict(blobs), REFUSE, f"a {len(raw) >> 20} MiB manifest", big=True))
    return out


def symlink_case(linear: Base, outside: Path) -> Crafted:
    """A share whose weight blob is a symlink to a file outside it (same bytes, so the digest matches)."""
    outside.write_bytes(linear.layer_bytes("model.safetensors"))
    raw, blobs = assemble(linear)
    weights = linear.layer("model.safetensors")["digest"]
    return Crafted("symlink-blob", "h-symlink-blob", "1", raw, blobs, EITHER, "a share blob that is a symlink to a file outside", symlinks={weights: outside})


def read_base(store_root: Path, ref_name: str) -> Base:
    """A packed bundle of a store, read as JSON and bytes (through the layout, not our API)."""
    index = json.loads((store_root / "index.json").read_text())
    entry = next(e for e in index["manifests"] if e.get("annotations", {}).get(mt.REF_NAME) == ref_name)
    blobs_dir = store_root / "blobs" / "sha256"
    manifest = json.loads((blobs_dir / entry["digest"].split(":", 1)[1]).read_bytes())
    blobs = {d["digest"]: (blobs_dir / d["digest"].split(":", 1)[1]).read_bytes() for d in [manifest["config"], *manifest["layers"]]}
    return Base(manifest, blobs)
