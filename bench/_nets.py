"""Models the compression benchmark trains (importable, so bundles capture them by class)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class BenchMLP(nn.Module):
    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.hidden = hidden
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BenchCNN(nn.Module):
    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.channels = channels
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * c * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BenchLSTM(nn.Module):
    """A small LSTM language model: embedding, two LSTM layers, output projection."""

    def __init__(self, vocab: int = 1000, dim: int = 128) -> None:
        super().__init__()
        self.vocab = vocab
        self.dim = dim
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.LSTM(dim, dim, num_layers=2, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(ids))
        return self.head(h)


def pack_square_linear(gib: float) -> Any:
    """Pack one bias-free square ``nn.Linear`` of about ``gib`` GiB (normal weights) by class; return its BundleInfo."""
    import nbmodelpack

    side = int((gib * (1 << 30) / 4) ** 0.5)
    model = nn.Linear(side, side, bias=False)
    with torch.no_grad():
        model.weight.normal_()
    return nbmodelpack.pack(model, "bench-big", arch="torch.nn:Linear", arch_kwargs={"in_features": side, "out_features": side, "bias": False}, metrics={})
