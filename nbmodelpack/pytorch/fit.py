"""``fit``: the usual supervised training loop, with the live dashboard.

What it records flows on by itself: ``model._nbmodelpack_metrics`` holds the
metrics of the weights the model ends with, labelled ``train`` and
``validation``, and ``model._nbmodelpack_training`` how it was trained;
``pack(metrics="auto")`` (the default) puts both on the card (the second as the
``finetune`` step when the model was loaded from a bundle).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..bundle.metrics import TRAIN, VALIDATION
from ..errors import UsageError
from .evaluate import MetricFn, top1_accuracy
from .interrupts import Held, held_interrupts
from .tracking import History, Tracker

METRICS: dict[str, MetricFn] = {"accuracy": top1_accuracy}


def _metric_fns(metrics: Iterable[str | MetricFn] | None) -> dict[str, MetricFn]:
    out: dict[str, MetricFn] = {}
    for m in metrics or ():
        if isinstance(m, str):
            if m not in METRICS:
                raise UsageError(f"unknown metric {m!r}", hint=f"use one of {sorted(METRICS)} or pass a function(outputs, targets) -> float")
            out[m] = METRICS[m]
        elif callable(m):
            out[getattr(m, "__name__", f"metric{len(out)}")] = m
        else:
            raise UsageError(f"metrics: {m!r} is neither a name nor a function")
    return out


def _unpack(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, list | tuple) or len(batch) != 2:
        raise UsageError(f"fit needs batches of (inputs, targets), got a {type(batch).__name__}", hint="e.g. a DataLoader over a TensorDataset(x, y)")
    x, y = batch
    return x.to(device), y.to(device)


class _Means:
    """Running means of loss and metrics, weighted by batch size."""

    def __init__(self, metric_fns: dict[str, MetricFn]) -> None:
        self.metric_fns = metric_fns
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        n = int(targets.shape[0]) if targets.dim() > 0 else 1
        self.count += n
        self.sums["loss"] = self.sums.get("loss", 0.0) + float(loss) * n
        for name, fn in self.metric_fns.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(fn(outputs, targets)) * n

    def means(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v / max(self.count, 1) for k, v in self.sums.items()}


def _evaluate(model: torch.nn.Module, loader: Iterable[Any], loss_fn: Callable[..., torch.Tensor], metric_fns: dict[str, MetricFn], dev: torch.device) -> dict[str, float]:
    means = _Means(metric_fns)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            x, y = _unpack(batch, dev)
            out = model(x)
            means.add(loss_fn(out, y), out, y)
    return means.means()


def evaluate(model: torch.nn.Module, loader: Iterable[Any], *, loss: Callable[..., torch.Tensor] | None = None, metrics: Sequence[str | MetricFn] = ("accuracy",), device: str = "cpu") -> dict[str, float]:
    """Mean loss and metrics of ``model`` over ``loader`` (no gradients, eval mode).

    Example:
        >>> evaluate(model, test_loader)  # doctest: +SKIP
        {'loss': 0.28, 'accuracy': 91.7}
    """
    return _evaluate(model, loader, loss or torch.nn.functional.cross_entropy, _metric_fns(metrics), torch.device(device))


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # One copy of the weights, on the CPU, to go back to on Ctrl-C.
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def card_metrics(history: History) -> dict[str, dict[str, Any]]:
    """The kept epoch's metrics as card sections: ``train`` and ``validation`` apart.

    Example:
        >>> h = History(rows=[{"epoch": 1, "loss": 0.5, "val_loss": 0.6}], x="epoch", kept=0)
        >>> card_metrics(h)
        {'train': {'loss': 0.5, 'epochs': 1}, 'validation': {'loss': 0.6}}
    """
    if history.kept is None:
        return {}
    kept = history.metrics
    train = {k: v for k, v in kept.items() if not k.startswith("val_")}
    validation = {k[4:]: v for k, v in kept.items() if k.startswith("val_")}
    out: dict[str, dict[str, Any]] = {TRAIN: {**train, "epochs": int(history.rows[history.kept]["epoch"])}}
    if validation:
        out[VALIDATION] = validation
    return out


def _record_training(model: torch.nn.Module, optimizer: torch.optim.Optimizer, history: History) -> None:
    """Add this run to ``model._nbmodelpack_training`` (what the next pack records as the step)."""
    if history.kept is None:
        return
    before: dict[str, Any] = dict(getattr(model, "_nbmodelpack_training", None) or {})
    epochs = int(history.rows[history.kept]["epoch"]) + int(before.get("epochs", 0))
    lr = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
    model._nbmodelpack_training = {**before, "epochs": epochs, "optimizer": type(optimizer).__name__, **({"lr": float(lr)} if isinstance(lr, float | int) else {})}  # type: ignore[assignment]


def fit(
    model: torch.nn.Module,
    train_loader: Iterable[Any],
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable[..., torch.Tensor] | None = None,
    val_loader: Iterable[Any] | None = None,
    metrics: Sequence[str | MetricFn] = ("accuracy",),
    device: str = "cpu",
) -> History:
    """Train ``model`` with a live dashboard; return its :class:`History`.

    Defaults: Adam (lr 1e-3) and cross-entropy. Each epoch logs ``loss`` and
    the ``metrics`` on the training batches, and ``val_loss``/``val_…`` on
    ``val_loader``. Ctrl-C (kernel interrupt) stops cleanly: the model gets
    back the weights of its best finished epoch (lowest ``val_loss``, else
    ``loss``), never half-updated ones. The model ends in eval mode, and the
    kept epoch's metrics go on the card of the next ``pack``.

    Example:
        >>> history = nbmodelpack.fit(model, train_loader, val_loader=test_loader, epochs=2)  # doctest: +SKIP
        >>> history.metrics["val_accuracy"]  # doctest: +SKIP
        93.4
    """
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"fit needs a torch.nn.Module, got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise UsageError(f"{type(model).__name__} has no trainable parameters", hint="unfreeze some (p.requires_grad_(True)) or load the bundle in a trainable form")
    if not isinstance(epochs, int) or epochs < 1:
        raise UsageError(f"epochs={epochs!r}: train at least one epoch")
    for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
        if loader is not None and not hasattr(loader, "__iter__"):
            raise UsageError(f"{name} is a {type(loader).__name__}, not an iterable of (inputs, targets) batches")
    metric_fns = _metric_fns(metrics)
    loss_fn = loss or torch.nn.functional.cross_entropy
    dev = torch.device(device)
    # Set-up imports (the optimizer pulls in torch._dynamo and sympy on first use) and builds the
    # dashboard: an interrupt here is held and raised inside the loop, so it returns a history.
    with held_interrupts(Held()) as held:
        model.to(dev)
        # Frozen parameters (requires_grad False) stay out of the default optimizer.
        optimizer = optimizer or torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        try:
            per_epoch: int | None = len(train_loader)  # type: ignore[arg-type]
        except TypeError:
            per_epoch = None
        total = per_epoch * epochs if per_epoch else None

        tracker = Tracker(epochs, title=f"fit {type(model).__name__}", x="epoch", print_rows=True, advance_on_log=False)
        history = tracker.history
        history.monitor = "val_loss" if val_loader is not None else "loss"
        best_state, best_value, best_row = _snapshot(model), math.inf, None
        epoch, done = 0, 0
    try:
        held.raise_pending()
        for epoch in range(1, epochs + 1):
            model.train()
            means = _Means(metric_fns)
            for batch in train_loader:
                x, y = _unpack(batch, dev)
                optimizer.zero_grad()
                out = model(x)
                value = loss_fn(out, y)
                value.backward()
                optimizer.step()
                with torch.no_grad():
                    means.add(value.detach(), out.detach(), y)
                done += 1
                tracker.advance(done, total, f"epoch {epoch}/{epochs} · loss {means.means()['loss']:.4f}")
            row: dict[str, Any] = {"epoch": epoch, **means.means()}
            if val_loader is not None:
                val = _evaluate(model, val_loader, loss_fn, metric_fns, dev)
                row.update({f"val_{k}": v for k, v in val.items()})
            if row[history.monitor] < best_value:
                best_state, best_value, best_row = _snapshot(model), row[history.monitor], len(history.rows)
            tracker.log(**row)
    except KeyboardInterrupt:
        # Back to the best finished epoch (or the starting weights): never half an update.
        model.load_state_dict(best_state)
        history.kept = best_row
        if best_row is None:
            note = f"interrupted in epoch {epoch}: no epoch finished, kept the starting weights"
        else:
            kept = history.rows[best_row]
            note = f"interrupted in epoch {epoch}: kept the weights of epoch {kept['epoch']} ({history.monitor} {kept[history.monitor]:.4f})"
        tracker.close(interrupted=True, note=note)
    except BaseException:
        tracker.close(note=f"stopped by an error in epoch {epoch}")
        raise
    else:
        tracker.close()
    finally:
        model.eval()
        model._nbmodelpack_metrics = card_metrics(history)  # type: ignore[assignment]  # read by pack(metrics="auto")
        _record_training(model, optimizer, history)
    return history

