"""The big-model benchmark's network (a public, importable module, so bundles load it by class once trusted)."""

from __future__ import annotations

import torch
from torch import nn


class BenchWide(nn.Module):
    """A stack of square Linear layers: ``layers * width**2 * 4`` bytes of fp32 weights."""

    def __init__(self, layers: int = 4, width: int = 4096) -> None:
        super().__init__()
        self.layers = layers
        self.width = width
        self.stack = nn.Sequential(*(nn.Linear(width, width, bias=False) for _ in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)
