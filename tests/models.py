"""Model classes the tests pack; importable by a fresh process (tests/ is on PYTHONPATH)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.hidden = hidden
        self.classes = classes
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.channels = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class TiedLM(nn.Module):
    """Embedding and output projection share one weight (tied)."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.vocab = vocab
        self.dim = dim
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, vocab, bias=False)
        self.proj.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.tanh(self.embed(ids)))


class Scale(nn.Module):
    """No Linear or Conv layer at all."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(28))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


class WithMeta(nn.Module):
    """A submodule named ``meta`` (the name torch.fx's GraphModule uses for its own dict)."""

    def __init__(self, n: int = 4) -> None:
        super().__init__()
        self.n = n
        self.meta = nn.Linear(n, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.meta(x)
