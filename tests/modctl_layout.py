"""ModelPack artifacts as other tools (modctl, KitOps, oras) lay them out: no architecture.json, README.md or summary of ours.

Layers: ``model.safetensors`` (``weight.v1.raw``) of a tiny BERT built from a config (no
download), ``config.json`` (``weight.config.v1.raw``, the Hugging Face config), a
``docs`` doc layer as ``.tar`` and a ``tokenizer`` code layer as ``.tar+gzip``, each tar
holding entries under its filepath (as modctl writes them).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch

MODEL = "application/vnd.cncf.model"
CONFIG_TYPE = f"{MODEL}.config.v1+json"
SPEC_TYPES = frozenset(f"{MODEL}.{kind}.v1.{packing}" for kind in ("weight", "weight.config", "doc", "code", "dataset") for packing in ("raw", "tar", "tar+gzip", "tar+zstd"))
FILEPATH = "org.cncf.model.filepath"
DOCS = {"docs/NOTES.md": b"# notes\n", "docs/eval/results.txt": b"accuracy 0.5\n"}
TOKENIZER = {"tokenizer/vocab.txt": b"[PAD]\n[CLS]\nhello\n"}


def tar_bytes(entries: dict[str, bytes], *, mode: str = "w", links: dict[str, str] | None = None, dirs: tuple[str, ...] = ()) -> bytes:
    """A tar of ``entries`` (name → content), plus symlinks and directories, compressed as ``mode`` says."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def tiny_bert() -> tuple[torch.nn.Module, dict[str, object]]:
    """A BertModel with tiny sizes, built from a config (no download), and its config as a dict."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    return BertModel(config).eval(), config.to_dict()


@dataclass
class Artifact:
    """A modctl-layout artifact: its config and layers (filepath, media type, bytes)."""

    config: bytes
    layers: list[tuple[str, str, bytes]] = field(default_factory=list)

    def write(self, directory: Path) -> tuple[Path, list[str], dict[str, dict[str, str]]]:
        """Write it as files for ``oras push``: the config path, ``path:mediatype`` items, the annotation file's content."""
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "config.modelpack.json"
        config.write_bytes(self.config)
        items, annotations = [], {}
        for filepath, media_type, data in self.layers:
            path = directory / ("layer-" + filepath.replace("/", "_"))
            path.write_bytes(data)
            items.append(f"{path}:{media_type}")
            annotations[str(path)] = {FILEPATH: filepath}
        return config, items, annotations


def bert_artifact(*, with_hf_config: bool = True) -> tuple[Artifact, torch.nn.Module]:
    model, hf_config = tiny_bert()
    layers = [("model.safetensors", f"{MODEL}.weight.v1.raw", safetensors.torch.save({k: v.contiguous() for k, v in model.state_dict().items()}))]
    if with_hf_config:
        layers.append(("config.json", f"{MODEL}.weight.config.v1.raw", json.dumps(hf_config).encode()))
    layers += [("docs", f"{MODEL}.doc.v1.tar", tar_bytes(DOCS)), ("tokenizer", f"{MODEL}.code.v1.tar+gzip", tar_bytes(TOKENIZER, mode="w:gz"))]
    params = sum(p.numel() for p in model.parameters())
    config = {
        "descriptor": {"name": "bert-tiny", "version": "v1"},
        "config": {"architecture": "transformer", "format": "safetensors", "paramSize": f"{params / 1e3:.1f}K", "precision": "float32"},
        "modelfs": {"type": "layers", "diffIds": []},
    }
    return Artifact(json.dumps(config).encode(), layers), model


def add_to_store(store, name: str, artifact: Artifact, tag: str = "v1"):  # noqa: ANN001, ANN201 - a Store; returns its BundleInfo
    """Put an artifact into a local store as a pull would (blobs, then the manifest)."""
    from nbmodelpack.bundle.manifest import Descriptor, build_manifest

    descs = []
    for filepath, media_type, data in artifact.layers:
        digest, size = store.put_bytes(data)
        descs.append(Descriptor(media_type, digest, size, {FILEPATH: filepath}))
    digest, size = store.put_bytes(artifact.config)
    return store.add_manifest(name, build_manifest(Descriptor(CONFIG_TYPE, digest, size), descs, {}), [tag])
