"""Accuracy and metrics of a model on the caller's data: one definition for compress, fit and notebooks.

Evaluation data is always what the caller passes (a DataLoader or ``(x, y)``
tensors); no library path reaches a demo dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..errors import UsageError

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]
_BATCH = 256


def top1_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of one batch of outputs, in percent.

    Example:
        >>> top1_accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
        50.0
    """
    return 100.0 * float((outputs.argmax(-1) == targets).float().mean())


def batches(data: Any, *, what: str = "evaluation data") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``data`` as a list of ``(inputs, targets)`` batches: a DataLoader (any iterable of pairs) or ``(x, y)`` tensors.

    Example:
        >>> len(batches((torch.zeros(600, 4), torch.zeros(600))))
        3
    """
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise UsageError(f"{what} has {len(x)} inputs but {len(y)} targets")
        return [(x[i : i + _BATCH], y[i : i + _BATCH]) for i in range(0, len(x), _BATCH)]
    if isinstance(data, Iterable) and not isinstance(data, str | bytes):
        out = []
        for item in data:
            if not (isinstance(item, tuple | list) and len(item) >= 2 and isinstance(item[0], torch.Tensor)):
                raise UsageError(f"{what} batches must be (inputs, targets) pairs of tensors")
            out.append((item[0], item[1]))
        if not out:
            raise UsageError(f"{what} is empty")
        return out
    raise UsageError(f"{what} must be a DataLoader or (x, y) tensors, not {type(data).__name__}", hint="pass your own held-out data")


def accuracy(model: Callable[..., Any], data: Any, *, metric: MetricFn = top1_accuracy) -> float:
    """``metric`` (default top-1 accuracy in percent) of ``model`` over all of ``data``, without gradients.

    Example:
        >>> m = torch.nn.Linear(2, 2)
        >>> 0.0 <= accuracy(m, (torch.randn(10, 2), torch.randint(0, 2, (10,)))) <= 100.0
        True
    """
    pairs = batches(data)
    with torch.inference_mode():
        outputs = torch.cat([model(x) for x, _ in pairs])
    return float(metric(outputs, torch.cat([y for _, y in pairs])))
