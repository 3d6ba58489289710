"""Request bodies → arrays, arrays → response bodies (Open Inference Protocol v2, ``/predict``).

Every problem with a request raises a :class:`RequestError` carrying a short,
non-leaky message and its HTTP status; nothing here touches the model. The v2
binary tensor extension (``Inference-Header-Content-Length``, the default of
``tritonclient``) is decoded and encoded too: no library implements the
server side of it for Python ASGI apps, so it is written here.
"""

from __future__ import annotations

import io
import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

# v2 datatype → numpy dtype (BF16 travels as FP32 in JSON and is cast by the runner).
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BF16": np.float32,
    "BYTES": np.object_,
}
_NUMPY_TO_V2 = {np.dtype(v).name: k for k, v in DATATYPES.items() if k not in ("BF16", "BYTES")}
# Which JSON element kinds each datatype accepts (numpy kinds: b bool, i/u int, f float, U str).
_KINDS = {"BOOL": "b", "BYTES": "US"}
_MAX_DIMS = 16


class RequestError(Exception):
    """A request the server refuses: ``str()`` is one line for the client, ``http_status`` its code.

    These are refusals of one HTTP request by the server door, not errors of the
    library (those are :class:`~nbmodelpack.errors.ModelPackError`, which carry
    ``http_status`` too); the server answers both the same way.
    """

    http_status = 400


class BadRequest(RequestError):
    """A body or header that does not parse or does not fit the model's signature."""


class BodyTooLarge(RequestError):
    """A body (or a decoded image) above the server's cap."""

    http_status = 413


class UnsupportedMedia(RequestError):
    """A content type or encoding this model or server does not take."""

    http_status = 415


class Unauthorized(RequestError):
    """A missing or wrong bearer token."""

    http_status = 401


class UnknownModel(RequestError):
    """A model name or version this server does not serve."""

    http_status = 404


class NotReady(RequestError):
    """The model is not loaded (yet, or at all)."""

    http_status = 503


@dataclass
class Spec:
    """One input or output of the model, from ``signature.json``."""

    name: str
    datatype: str
    shape: list[int]

    def fits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(w in (-1, g) for w, g in zip(self.shape, shape, strict=True))

    def describe(self) -> str:
        return "[" + ",".join(str(d) for d in self.shape) + "]"


def v2_datatype(array: np.ndarray) -> str:
    """The v2 datatype name of a numpy array (``float32`` → ``FP32``)."""
    return "BYTES" if array.dtype.kind in "OUS" else _NUMPY_TO_V2[array.dtype.name]


def loads(body: bytes) -> Any:
    """Parse JSON, turning every failure into a short 400 (NaN/Infinity are named)."""
    if not body.strip():
        raise BadRequest("empty body: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"NaN" in body or b"Infinity" in body or "infinity" in str(exc):
            raise BadRequest("NaN and Infinity are not valid input values") from None
        raise BadRequest(f"malformed JSON: {str(exc).split(':')[0][:80]}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > _MAX_DIMS or not all(type(d) is int and d >= 0 for d in value):
        raise BadRequest(f"{where}: 'shape' must be a list of non-negative integers")
    return tuple(value)


def to_array(data: Any, datatype: str, where: str) -> np.ndarray:
    """A JSON value (nested or flat list, or scalar) → numpy array of ``datatype``, checked."""
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, RecursionError):
        raise BadRequest(f"{where}: 'data' is ragged or not numbers") from None
    if raw.ndim > _MAX_DIMS + 1:
        raise BadRequest(f"{where}: 'data' is nested too deeply")
    kinds = _KINDS.get(datatype, "biuf" if datatype.startswith("FP") or datatype == "BF16" else "biu")
    if raw.size and raw.dtype.kind not in kinds:
        what = {"U": "strings", "O": "mixed or out-of-range values", "f": "non-integer numbers", "b": "booleans", "i": "integers", "u": "integers"}.get(raw.dtype.kind, "values")
        raise BadRequest(f"{where}: 'data' holds {what}, which is not {datatype}")
    if datatype == "BYTES":
        return raw.astype(np.object_)
    dtype = np.dtype(DATATYPES[datatype])
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise BadRequest(f"{where}: 'data' holds NaN or Infinity")
    if dtype.kind in "iu" and raw.size:
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise BadRequest(f"{where}: 'data' is out of range for {datatype}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float overflow to FP16 is checked just below
        out = raw.astype(dtype, copy=False)
    if dtype.kind == "f" and not np.isfinite(out).all():
        raise BadRequest(f"{where}: 'data' overflows {datatype}")
    return out


def _from_binary(chunk: bytes, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if datatype == "BYTES":
        items, pos = [], 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                raise BadRequest(f"{where}: BYTES element is truncated")
            n = int.from_bytes(chunk[pos : pos + 4], "little")
            items.append(chunk[pos + 4 : pos + 4 + n])
            pos += 4 + n
        return np.array(items, dtype=np.object_).reshape(shape) if math.prod(shape) == len(items) else _size_error(where, shape, len(items))
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<") if datatype != "BF16" else None
    if dtype is None:
        raise BadRequest(f"{where}: send BF16 as JSON data")
    if len(chunk) != math.prod(shape) * dtype.itemsize:
        raise BadRequest(f"{where}: {len(chunk)} bytes do not fit shape {list(shape)} of {datatype}")
    arr = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    if dtype.kind == "f" and not np.isfinite(arr).all():
        raise BadRequest(f"{where}: 'data' holds NaN or Infinity")
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _size_error(where: str, shape: tuple[int, ...], got: int) -> np.ndarray:
    raise BadRequest(f"{where}: 'data' has {got} values but shape {list(shape)} needs {math.prod(shape)}")


@dataclass
class InferRequest:
    """A decoded v2 inference request."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None  # None: all outputs
    binary_outputs: set[str]


def decode_infer(body: bytes, header_length: str | None, inputs: list[Spec], outputs: list[Spec]) -> InferRequest:
    """Decode and check a v2 ``infer`` body against the model's signature."""
    binary = b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length is not a number") from None
        if not 0 < n <= len(body):
            raise BadRequest("Inference-Header-Content-Length does not fit the body")
        body, binary = body[:n], body[n:]
    doc = loads(body)
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object with 'inputs'")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    wanted = {s.name: s for s in inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"inputs[{i}] must be an object with a 'name'")
        name = item["name"]
        where = f"input {name[:40]!r}"
        spec = wanted.get(name)
        if spec is None:
            raise BadRequest(f"{where} is not an input of this model (it takes {', '.join(wanted)})")
        if name in arrays:
            raise BadRequest(f"{where} is given twice")
        datatype = item.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise BadRequest(f"{where}: unknown datatype {str(datatype)[:20]!r}")
        if datatype != spec.datatype:
            raise BadRequest(f"{where} has datatype {datatype}; the model takes {spec.datatype}")
        shape = _shape(item.get("shape"), where)
        iparams = item.get("parameters") or {}
        size = iparams.get("binary_data_size") if isinstance(iparams, dict) else None
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise BadRequest(f"{where}: binary_data_size does not fit the body")
            arr = _from_binary(binary[offset : offset + size], datatype, shape, where)
            offset += size
        else:
            if "data" not in item:
                raise BadRequest(f"{where} has no 'data'")
            arr = to_array(item["data"], datatype, where)
            if arr.size != math.prod(shape):
                _size_error(where, shape, int(arr.size))
            arr = arr.reshape(shape)
        if not spec.fits(arr.shape):
            raise BadRequest(f"{where} has shape {list(arr.shape)}; the model takes {spec.describe()}")
        if arr.shape and arr.shape[0] == 0:
            raise BadRequest(f"{where} has an empty batch")
        arrays[name] = arr
    if offset != len(binary):
        raise BadRequest("the body has binary data that no input claims")
    missing = [n for n in wanted if n not in arrays]
    if missing:
        raise BadRequest(f"missing input {missing[0]!r}")
    out_names, binary_out = _requested_outputs(doc.get("outputs"), params, [s.name for s in outputs])
    return InferRequest(request_id, arrays, out_names, binary_out)


def _requested_outputs(value: Any, params: dict[str, Any], known: list[str]) -> tuple[list[str] | None, set[str]]:
    binary_all = params.get("binary_data_output") is True
    if value is None:
        return None, set(known) if binary_all else set()
    if not isinstance(value, list):
        raise BadRequest("'outputs' must be a list")
    names, binary = [], set()
    for item in value:
        if not isinstance(item, dict) or item.get("name") not in known:
            shown = str(item.get("name") if isinstance(item, dict) else item)[:40]
            raise BadRequest(f"unknown output {shown!r} (this model has {', '.join(known)})")
        names.append(item["name"])
        oparams = item.get("parameters") or {}
        if binary_all or (isinstance(oparams, dict) and oparams.get("binary_data") is True):
            binary.add(item["name"])
    return names, binary


def encode_infer(model_name: str, version: str, request_id: str | None, outputs: dict[str, np.ndarray], binary: set[str]) -> tuple[bytes, dict[str, str]]:
    """A v2 response body and its extra headers (binary outputs follow the JSON header)."""
    items, chunks = [], []
    for name, arr in outputs.items():
        item: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr), "shape": list(arr.shape)}
        if name in binary:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes() if arr.dtype.kind != "O" else b"".join(len(b).to_bytes(4, "little") + b for b in (x if isinstance(x, bytes) else str(x).encode() for x in arr.ravel()))
            item["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            item["data"] = arr.ravel()
        items.append(item)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": items}
    if request_id is not None:
        doc["id"] = request_id
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, {}
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head))}


# ---- /predict ------------------------------------------------------------------------------
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF")


def looks_like_image(body: bytes, content_type: str) -> bool:
    """An image upload: an ``image/*`` content type or a PNG/JPEG/… signature."""
    return content_type.startswith("image/") or body.startswith(IMAGE_MAGIC)


# The keys seed-style clients put their batch under: ours, Flask/KServe-v1 ``instances``, ``data``.
PREDICT_KEYS = ("input", "instances", "data")


def decode_predict_json(body: bytes, spec: Spec) -> np.ndarray:
    """``{"input" | "instances" | "data": [...]}`` → a batch for the model's one input.

    A single item gains its batch dimension; flat vectors (one per item, or one for a
    single item) are reshaped to the signature's per-item shape when it is fully known.

    Example:
        >>> decode_predict_json(b'{"data": [[1, 2, 3, 4]]}', Spec("x", "FP32", [-1, 2, 2])).shape
        (1, 2, 2)
    """
    doc = loads(body)
    keys = [k for k in PREDICT_KEYS if isinstance(doc, dict) and k in doc]
    if len(keys) != 1:
        raise BadRequest('send one of {"input": [...]}, {"instances": [...]} or {"data": [...]} as JSON, or an image')
    where = f"'{keys[0]}'"
    arr = _fit_items(to_array(doc[keys[0]], spec.datatype, where), spec, where)
    if arr.shape and arr.shape[0] == 0:
        raise BadRequest(f"{where} is an empty batch")
    return arr


def _fit_items(arr: np.ndarray, spec: Spec, where: str) -> np.ndarray:
    item = spec.shape[1:]
    if len(arr.shape) == len(spec.shape) - 1 and spec.fits((1, *arr.shape)):
        return arr[None, ...]
    if spec.fits(arr.shape):
        return arr
    if item and all(d > 0 for d in item):
        per_item = int(np.prod(item))
        if arr.ndim == 1 and arr.size == per_item:
            return arr.reshape(1, *item)
        if arr.ndim == 2 and arr.shape[1] == per_item:
            return arr.reshape(arr.shape[0], *item)
    raise BadRequest(f"{where} has shape {list(arr.shape)}; the model takes {spec.describe()} (or flat vectors of its per-item size)")


def body_decoder(encoding: str, cap: int) -> Callable[[bytes], bytes] | None:
    """The function that undoes a request's ``Content-Encoding`` (gzip, deflate), bounded by ``cap``.

    Example:
        >>> import gzip
        >>> body_decoder("gzip", 100)(gzip.compress(b"{}"))
        b'{}'
    """
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    # gzip framing (wbits 16+), zlib framing (RFC "deflate"), and raw deflate that some clients send.
    wbits = {"gzip": [31], "x-gzip": [31], "deflate": [15, -15]}.get(name)
    if wbits is None:
        raise UnsupportedMedia(f"Content-Encoding {encoding[:30]!r} is not supported; send gzip, deflate or an uncompressed body")

    def inflate(body: bytes) -> bytes:
        for i, bits in enumerate(wbits):
            unzip = zlib.decompressobj(bits)
            try:
                out = unzip.decompress(body, cap + 1)
            except zlib.error:
                if i + 1 < len(wbits):
                    continue
                raise BadRequest(f"the body is not valid {name} data") from None
            if len(out) > cap or unzip.unconsumed_tail:
                raise BodyTooLarge(f"body too large once decompressed (limit {cap} bytes)")
            if not unzip.eof:
                raise BadRequest(f"the {name} body is truncated")
            return out
        raise AssertionError("unreachable")

    return inflate


def decode_image(data: bytes, preprocess: dict[str, Any], spec: Spec) -> np.ndarray:
    """An encoded image → a batch of one, as ``processing.json`` describes (mode, size, scale…)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            if img.width * img.height > 25_000_000:
                raise BodyTooLarge("the image is too large")
            img.load()
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise BadRequest("the body is not a readable image (send PNG or JPEG)") from None
    mode = str(preprocess.get("mode", "RGB"))
    img = img.convert(mode)
    size = preprocess.get("size")
    if size:
        img = img.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
    x: np.ndarray = np.asarray(img, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if preprocess.get("invert"):
        x = 255.0 - x
    x = x * float(preprocess.get("scale", 1.0))
    if "mean" in preprocess:
        x = x - np.asarray(preprocess["mean"], dtype=np.float32)
    if "std" in preprocess:
        x = x / np.asarray(preprocess["std"], dtype=np.float32)
    layout = str(preprocess.get("layout", "NCHW"))
    x = x.transpose(2, 0, 1) if layout == "NCHW" else (x.reshape(-1) if layout == "flat" else x)
    batch = x[None, ...].astype(DATATYPES.get(spec.datatype, np.float32))
    if not spec.fits(batch.shape):
        raise BadRequest(f"the image becomes shape {list(batch.shape)}; the model takes {spec.describe()}")
    return np.ascontiguousarray(batch)


def predictions(logits: np.ndarray, labels: list[str] | None, softmax: bool) -> dict[str, Any]:
    """``{"prediction": label, "probabilities": {label: p}}`` per row (one row: no list)."""
    if logits.ndim != 2:
        return {"output": logits.tolist()}
    scores = logits.astype(np.float64)
    if softmax or labels is None:
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    names = labels if labels is not None and len(labels) == scores.shape[1] else [str(i) for i in range(scores.shape[1])]
    rows = [
        {"prediction": names[int(row.argmax())], "probabilities": {n: round(float(p), 6) for n, p in zip(names, row, strict=True)}}
        for row in scores
    ]
    return rows[0] if len(rows) == 1 else {"predictions": rows}
