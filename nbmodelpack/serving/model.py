"""The served bundle in memory: its module, signature and processing, as every worker loads it.

The runner builds one :class:`LoadedModel` before any worker starts (the probe),
so a bundle that cannot be opened, trusted, decrypted or rebuilt is refused in
one line; each worker then builds its own the same way.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from .. import api
from ..errors import BundleFormatError, ServingError
from ..store import get_store
from . import codec
from .codec import Spec
from .options import ServeOptions


def signature_specs(sig: Any, ref: str) -> tuple[list[Spec], list[Spec]]:
    """The inputs and outputs of ``signature.json``, checked (a bundle's JSON is not trusted).

    Example:
        >>> ins, outs = signature_specs({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        ...                              "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]}, "m:1")
        >>> ins[0].describe()
        '[-1,3]'
    """
    if not isinstance(sig, dict):
        raise BundleFormatError(f"signature.json of {ref} is not a JSON object")
    out: list[list[Spec]] = []
    for key in ("inputs", "outputs"):
        items = sig.get(key)
        if not isinstance(items, list) or not items:
            raise ServingError(f"{ref} does not say its {key}", hint="re-pack it with example=")
        specs = []
        for item in items:
            ok = isinstance(item, dict) and isinstance(item.get("name"), str) and item.get("datatype") in codec.DATATYPES
            shape = item.get("shape") if ok else None
            if not ok or not isinstance(shape, list) or len(shape) > 16 or not all(type(d) is int and d >= -1 for d in shape):
                raise BundleFormatError(f"signature.json of {ref}: each of its {key} needs a name, a v2 datatype and a shape")
            specs.append(Spec(item["name"], item["datatype"], list(shape)))
        out.append(specs)
    return out[0], out[1]


class LoadedModel:
    """The served bundle: module, signature, processing; ``run`` is called on the model thread."""

    def __init__(self, options: ServeOptions) -> None:
        import torch

        self.threads = options.threads or max(1, (os.cpu_count() or 1) // max(1, options.workers))
        torch.set_num_threads(self.threads)
        bundle = get_store().open(options.ref)
        # The same path as nbmodelpack.load: trust policy first, allow-listed architecture, key.
        self.module = api.load(bundle, identity=options.key(), trust_code=options.trust_code, verify=options.verify)
        self.info = bundle.info
        self.name = options.model_name or bundle.name
        self.version = str(self.info.version if self.info.version is not None else 1)
        self.inputs, self.outputs = signature_specs(bundle.read_json("signature.json", identity=options.key()), self.info.ref)
        processing = bundle.read_json("processing.json", identity=options.key()) if bundle.has("processing.json") else {}
        if not isinstance(processing, dict):
            raise BundleFormatError(f"processing.json of {self.info.ref} is not a JSON object")
        pre, labels, post = processing.get("preprocess"), processing.get("labels"), processing.get("postprocess")
        if not (pre is None or isinstance(pre, dict)) or not (post is None or isinstance(post, dict)):
            raise BundleFormatError(f"processing.json of {self.info.ref}: preprocess and postprocess must be objects")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str | int) for x in labels)):
            raise BundleFormatError(f"processing.json of {self.info.ref}: labels must be a list of strings")
        self.preprocess: dict[str, Any] | None = pre
        self.labels: list[str] | None = [str(x) for x in labels] if labels is not None else None
        self.softmax = bool((post or {}).get("softmax"))
        self._torch = torch
        self._bf16 = {s.name for s in self.inputs if s.datatype == "BF16"}

    def init_thread(self) -> None:
        """Run on the model thread: OpenMP's thread count is per thread, so set it there too."""
        self._torch.set_num_threads(self.threads)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = []
        for spec in self.inputs:
            t = torch.from_numpy(inputs[spec.name])
            args.append(t.to(torch.bfloat16) if spec.name in self._bf16 else t)
        rows = args[0].shape[0] if args and args[0].dim() else 1
        with torch.inference_mode():
            out = self.module(*args)
        outs = tuple(out) if isinstance(out, tuple | list) else (out,)
        result = {}
        for spec, t in zip(self.outputs, outs, strict=False):
            t = t.detach().cpu()
            if t.dtype == torch.bfloat16:
                t = t.float()
            if not t.dim() or t.shape[0] != rows:
                raise RuntimeError(f"output {spec.name} has {t.shape[0] if t.dim() else 0} rows for {rows} input rows")
            result[spec.name] = t.numpy()
        return result

    def warm_up(self) -> float:
        """Run a batch of one zero input a few times; return the fastest call in seconds (inf if it fails)."""
        example = {s.name: np.zeros([1 if d == -1 else d for d in s.shape], dtype=codec.DATATYPES[s.datatype]) for s in self.inputs}
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            try:
                self.run(example)
            except Exception:
                return float("inf")
            best = min(best, time.perf_counter() - start)
        return best

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "pytorch",
            "inputs": [asdict(s) for s in self.inputs],
            "outputs": [asdict(s) for s in self.outputs],
        }


__all__ = ["LoadedModel"]
