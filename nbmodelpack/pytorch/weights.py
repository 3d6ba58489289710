"""The weights of a bundle: written as one ``model.safetensors`` or as shards, read back checked.

Writing streams each tensor's own memory into the store (no second copy of the
model) while the store hashes the same bytes on a second thread, so a blob is
never read back after it is written. Safetensors' own writers take a path (and
write through a temp file of their own) or build the whole file as bytes; neither
lets the bytes be hashed as they go, so the documented format (8-byte header
length, JSON header, tensor data) is written here, and the tests read every file
back with safetensors.

Reading maps each weight layer through :meth:`StoredBundle.plain_file` and checks a
sharded bundle's index against the shards' own headers.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import safetensors
import torch

from ..bundle import mediatypes as mt
from ..bundle.shards import (
    DEFAULT_SHARD_BYTES,
    INDEX,
    WEIGHTS,
    check_index,
    index_document,
    parse_size,
    plan_shards,
    shard_name,
)
from ..config import pack_options
from ..errors import BundleFormatError, ModelPackError, UsageError
from ..store import StoredBundle
from .quantize import META_KEY, dequantize_state, parse_meta

# torch dtype -> the safetensors dtype name (the format's own table).
_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
}  # fmt: skip
_PIECE = 64 << 20  # bytes handed to the store per write (and hashed on its second thread meanwhile)
# A shard header lists its tensors' names, dtypes and shapes: 100 MiB is far beyond any real one.
MAX_HEADER_BYTES = 100 << 20


def _flat_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's bytes, without a copy for a contiguous CPU tensor."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy())  # type: ignore[arg-type]  # numpy arrays are buffers


@dataclass
class SafetensorsStream:
    """One safetensors file, produced as a stream of memory views of the tensors themselves."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    cancelled: bool = False  # set from another thread: the stream stops at its next piece

    @property
    def nbytes(self) -> int:
        """The size of the tensor data (the header not counted)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def header(self) -> bytes:
        entries: dict[str, Any] = {"__metadata__": self.metadata} if self.metadata else {}
        offset = 0
        for name, t in self.tensors.items():
            if t.dtype not in _DTYPES:
                raise UsageError(f"{name}: dtype {t.dtype} cannot be stored in safetensors", hint="cast it to a float or integer dtype")
            size = t.numel() * t.element_size()
            entries[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(entries, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the format pads the header so the data starts 8-aligned
        return struct.pack("<Q", len(raw)) + raw

    def chunks(self) -> Iterator[memoryview | bytes]:
        yield self.header()
        for t in self.tensors.values():
            view = _flat_bytes(t)
            for start in range(0, len(view), _PIECE):
                if self.cancelled:
                    raise InterruptedError("the weights' write was stopped")
                yield view[start : start + _PIECE]


def _ordered(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Widest dtypes first: with an 8-aligned data start every tensor is then aligned to its element size.
    return dict(sorted(tensors.items(), key=lambda kv: -kv[1].element_size()))


def weight_files(
    tensors: dict[str, torch.Tensor], *, metadata: dict[str, str] | None = None, shard_size: int | None = None, per_shard: Any = None
) -> list[tuple[str, str, bytes | SafetensorsStream]]:
    """The weight layers for ``tensors``: ``model.safetensors``, or shards plus their index when larger than ``shard_size``.

    ``per_shard(names)`` may return extra header metadata for the shard holding ``names``.

    Example:
        >>> [f for f, _, _ in weight_files({"a": torch.zeros(4), "b": torch.zeros(4)}, shard_size=16)]
        ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']
    """
    limit = DEFAULT_SHARD_BYTES if shard_size is None else shard_size
    meta = {"format": "pt", **(metadata or {})}
    sizes = [(name, t.numel() * t.element_size()) for name, t in tensors.items()]
    total = sum(size for _, size in sizes)
    if total <= limit or len(sizes) < 2:
        return [(WEIGHTS, mt.WEIGHT, SafetensorsStream(_ordered(tensors), {**meta, **(per_shard(list(tensors)) if per_shard else {})}))]
    groups = plan_shards(sizes, limit)
    files: list[tuple[str, str, bytes | SafetensorsStream]] = []
    weight_map: dict[str, str] = {}
    for number, names in enumerate(groups, 1):
        name = shard_name(number, len(groups))
        extra = per_shard(names) if per_shard else {}
        files.append((name, mt.WEIGHT, SafetensorsStream(_ordered({n: tensors[n] for n in names}), {**meta, **extra})))
        weight_map.update(dict.fromkeys(names, name))
    index = json.dumps(index_document(total, weight_map), indent=1).encode()
    files.append((INDEX, mt.WEIGHT_CONFIG, index))
    return files


def shard_bytes(shard_size: int | str | None) -> int:
    """The shard size in bytes: the argument, else ``[pack] shard_size`` in config.toml, else 2 GiB.

    Example:
        >>> shard_bytes("500MB")
        500000000
    """
    value = shard_size if shard_size is not None else pack_options().get("shard_size", DEFAULT_SHARD_BYTES)
    try:
        return parse_size(value)
    except (ValueError, TypeError) as exc:
        where = "shard_size" if shard_size is not None else "[pack] shard_size in config.toml"
        raise UsageError(f"{where}: {exc}", hint="e.g. 500MB or 2GiB") from exc


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this process can use; one-line :class:`UsageError` otherwise.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"device={str(device)[:40]!r} is not a torch device", hint='use "cpu" or "cuda"') from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={str(device)[:40]!r}: torch sees no CUDA GPU on this machine", hint='load with device="cpu"')
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise UsageError(f"device={str(device)[:40]!r} is not supported for loading", hint='use "cpu" or "cuda"')
    return dev


def check_index_of(bundle: StoredBundle, *, identity: Any = None) -> dict[str, list[str]] | None:
    """The tensor names each shard must hold, per the bundle's index (``None`` for one ``model.safetensors``)."""
    files = bundle.weight_files()
    if not files:
        raise BundleFormatError(f"{bundle.name} has no {WEIGHTS} and no complete set of shards", hint="re-pack the model")
    if files == [WEIGHTS]:
        return None
    if not bundle.has(INDEX):
        raise BundleFormatError(f"{bundle.name} has shards but no {INDEX}", hint="re-pack the model")
    try:
        return check_index(bundle.read_json(INDEX, identity=identity), files)
    except ValueError as exc:
        raise BundleFormatError(str(exc), hint="the bundle was not written by a ModelPack tool") from exc


def _header(path: str, filepath: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BundleFormatError(f"{filepath} is too short to be safetensors")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_HEADER_BYTES:
            raise BundleFormatError(f"{filepath} declares a {size:,}-byte header", hint="the file is not safetensors written by a ModelPack tool")
        raw = f.read(size)
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BundleFormatError(f"{filepath} has an unreadable header") from exc
    if not isinstance(doc, dict):
        raise BundleFormatError(f"{filepath} has an unreadable header")
    return doc


# Shards unwrapped at once: each holds its plaintext in memory only as the tensors map it,
# so this bounds CPU work (decryption processes), not memory.
_PARALLEL_SHARDS = 4


def _merge_meta(total: dict[str, Any] | None, meta: dict[str, Any] | None, filepath: str) -> dict[str, Any] | None:
    if meta is None:
        return total
    if total is None:
        return {**meta, "tensors": dict(meta.get("tensors") or {})}
    if meta.get("scheme") != total.get("scheme"):
        raise BundleFormatError(f"{filepath} is quantized differently from the other shards")
    total["tensors"].update(dict(meta.get("tensors") or {}))
    return total


def load_state(
    bundle: StoredBundle,
    *,
    identity: Any = None,
    packed: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    verify: bool = False,
) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` or of every shard, decrypted/decompressed in memory, verified.

    Quantized or cast weights come back as float tensors; int8 Linear weights
    are also put in ``packed`` (name → (int8, scale)) for the opt-in dynamic kernel.
    A sharded bundle's index must name exactly the tensors each shard holds.
    ``device`` ("cuda") maps the tensors straight onto that device. ``verify=True``
    re-hashes the weights even when the store recorded them as intact.
    """
    dev = check_device(device)
    files = bundle.weight_files()
    expected = check_index_of(bundle, identity=identity)

    def read(filepath: str) -> tuple[dict[str, torch.Tensor], Any]:
        try:
            # safetensors maps the file (a verified blob, or an in-memory plaintext); no copy here.
            with bundle.plain_file(filepath, identity=identity, verify=verify) as path:
                header = _header(path, filepath)
                names = sorted(k for k in header if k != "__metadata__")
                if expected is not None and names != sorted(expected[filepath]):
                    raise BundleFormatError(f"{filepath} holds other tensors than {INDEX} says", hint="the bundle was not written by a ModelPack tool")
                with safetensors.safe_open(path, framework="pt", device=str(dev)) as f:
                    part = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a mapping
                raw_meta = (header.get("__metadata__") or {}).get(META_KEY) if isinstance(header.get("__metadata__"), dict) else None
        except ModelPackError:
            raise
        except Exception as exc:  # safetensors raises its own SafetensorError and others
            raise BundleFormatError(f"{filepath} cannot be read: {str(exc)[:120]}", hint="the file is truncated or not safetensors") from exc
        return part, raw_meta

    # Shards are read side by side: encrypted or compressed ones are unwrapped in parallel
    # (the age command runs as its own process per shard); results are merged in order.
    with ThreadPoolExecutor(max(1, min(len(files), _PARALLEL_SHARDS))) as pool:
        parts = list(pool.map(read, files))
    state: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] | None = None
    for filepath, (part, raw_meta) in zip(files, parts, strict=True):
        if raw_meta is not None:
            meta = _merge_meta(meta, parse_meta(raw_meta), filepath)
        if state.keys() & part.keys():
            raise BundleFormatError(f"{filepath} repeats a tensor of another shard")
        state.update(part)
    return dequantize_state(state, meta, packed=packed) if meta else state
