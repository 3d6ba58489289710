"""Measurements of parent and child: latency, example inputs, non-zeros, eval-shape checks.

Accuracy itself is :func:`nbmodelpack.pytorch.evaluate.accuracy` (one definition for
compress, fit and the notebooks); evaluation data is always the caller's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import CompressionError
from ..store import StoredBundle

if TYPE_CHECKING:
    import torch

LATENCY_BATCH = 64  # rows per timed forward pass


def latency_ms(models: list[Any], args: tuple[Any, ...], runs: int = 20) -> list[float]:
    """Fastest CPU time of one forward pass on ``args`` per model (interleaved, after warm-up).

    One thread, and the fastest of ``runs`` rather than the median: on a shared
    machine, thread barriers and the median mostly measure other processes.
    """
    import torch

    times: list[list[float]] = [[] for _ in models]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _time_runs(models, args, runs, times)
    finally:
        torch.set_num_threads(threads)
    return [1000 * min(t) for t in times]


def _time_runs(models: list[Any], args: tuple[Any, ...], runs: int, times: list[list[float]]) -> None:
    import torch

    with torch.inference_mode():
        for m in models:
            for _ in range(3):
                m(*args)
        for _ in range(runs):
            for i, m in enumerate(models):
                t0 = time.perf_counter()
                m(*args)
                times[i].append(time.perf_counter() - t0)


def first_rows(example: Any, n: int) -> Any:
    """The first ``n`` rows of an example input (a tensor or a tuple of tensors)."""
    if isinstance(example, tuple | list):
        return tuple(first_rows(e, n) for e in example)
    # clone: a slice is a view, and saving it (torch.export does) would save the whole storage
    return example[:n].clone() if hasattr(example, "shape") and len(example.shape) > 0 else example


def signature_example(bundle: StoredBundle, batch: int = 8) -> Any:
    import torch

    sig = bundle.read_json("signature.json") if bundle.has("signature.json") else {}
    inputs = sig.get("inputs") or []
    dtypes = {"FP32": torch.float32, "FP16": torch.float16, "BF16": torch.bfloat16, "FP64": torch.float64}
    tensors = []
    gen = torch.Generator().manual_seed(0)
    for spec in inputs:
        shape = [batch] + [int(d) for d in spec["shape"][1:]]
        if any(d < 0 for d in shape) or spec["datatype"] not in dtypes:
            return None
        tensors.append(torch.randn(shape, generator=gen, dtype=torch.float32).to(dtypes[spec["datatype"]]))
    if not tensors:
        return None
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def check_eval_shape(bundle: StoredBundle, x: torch.Tensor) -> None:
    sig = bundle.read_json("signature.json") if bundle.has("signature.json") else {}
    inputs = sig.get("inputs") or []
    if len(inputs) != 1:
        return
    want = [int(d) for d in inputs[0]["shape"]]
    got = list(x.shape)
    if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want[1:], got[1:], strict=False)):
        raise CompressionError(
            f"eval inputs have shape {got}; {bundle.name} takes {want}",
            hint="pass eval data shaped like the model's input (see `modelpack show`)",
        )


def output_tensors(out: Any) -> list[torch.Tensor]:
    """The floating tensors of a model's output (a tensor, or dicts/tuples/lists of them), in order.

    Example:
        >>> import torch
        >>> [t.tolist() for t in output_tensors({"logits": torch.ones(1), "n": 3, "h": (torch.zeros(1),)})]
        [[1.0], [0.0]]
    """
    import torch

    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in output_tensors(v)]
    if isinstance(out, tuple | list):
        return [t for v in out for t in output_tensors(v)]
    return []


def nonzeros(state: dict[str, torch.Tensor]) -> int:
    return sum(int(t.count_nonzero()) for t in state.values() if t.is_floating_point())
