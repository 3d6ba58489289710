"""Transfer learning: freeze parameters by name pattern, replace the classifier head, train.

``finetune`` starts from a bundle (or a module already loaded from one), so the
result keeps ``bundle_info`` of its parent and the next ``pack`` records it as
``finetune of NAME:VERSION`` with the freeze pattern, the new head and the
training settings. A new head changes the init argument that sets the number
of classes (``classes``, ``num_classes``, …) on the module too, so the child
is still described by its class and loads as that class.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..errors import UsageError
from .evaluate import MetricFn
from .fit import fit

# Init-argument names that set a classifier's number of outputs, most specific first.
_CLASS_ARGS = ("num_classes", "n_classes", "classes", "num_labels", "out_features", "n_outputs", "outputs", "output_size", "out_dim")


def freeze_parameters(model: torch.nn.Module, pattern: str | Sequence[str]) -> list[str]:
    """Stop training the parameters whose names match a glob (``"net.1.*"``); return their names.

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
        >>> freeze_parameters(m, "0.*")
        ['0.weight', '0.bias']
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    names = [n for n, _ in model.named_parameters() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not names:
        some = ", ".join(n for n, _ in list(model.named_parameters())[:4])
        raise UsageError(f"freeze {', '.join(patterns)!s}: no parameter name matches", hint=f"names look like {some}")
    chosen = set(names)
    for n, p in model.named_parameters():
        if n in chosen:
            p.requires_grad_(False)
    return names


def _last_linear(model: torch.nn.Module) -> tuple[str, torch.nn.Linear]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not found:
        raise UsageError(
            f"{type(model).__name__} has no Linear layer to replace",
            hint="run the class definition in this kernel before loading (load then gives that class), or replace the head yourself and call nbmodelpack.fit",
        )
    return found[-1]


def _set_submodule(model: torch.nn.Module, path: str, new: torch.nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, new)


def replace_head(model: torch.nn.Module, classes: int) -> str:
    """Put a fresh ``Linear`` with ``classes`` outputs in place of the last ``Linear``; return its name.

    When the module records the old number of outputs in an init-argument
    attribute (``self.classes = classes``), that attribute is updated as well,
    so ``pack`` records the new init arguments and the child loads as its class.

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
        >>> replace_head(m, 3), m[2].out_features
        ('2', 3)
    """
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise UsageError(f"head={classes!r}: give the number of classes, a positive integer")
    name, old = _last_linear(model)
    new = torch.nn.Linear(old.in_features, classes, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    _set_submodule(model, name, new)
    for attr in _CLASS_ARGS:
        for key in (attr, f"_{attr}"):
            if model.__dict__.get(key) == old.out_features and isinstance(model.__dict__.get(key), int):
                model.__dict__[key] = classes
    return name


def finetune(
    model: torch.nn.Module,
    train_data: Iterable[Any],
    *,
    val_data: Iterable[Any] | None = None,
    freeze: str | Sequence[str] | None = None,
    head: int | None = None,
    epochs: int = 3,
    lr: float = 1e-3,
    loss: Callable[..., torch.Tensor] | None = None,
    metrics: Sequence[str | MetricFn] = ("accuracy",),
    device: str = "cpu",
) -> torch.nn.Module:
    """Fine-tune a module loaded from a bundle, in place; return it (``model.fit_history`` is the run).

    ``freeze`` (glob over parameter names) keeps those weights fixed; ``head``
    replaces the last ``Linear`` by a fresh one with that many outputs. The
    model is trained with Adam (``lr``) by :func:`nbmodelpack.fit`, and keeps
    its parent's ``bundle_info``, so ``pack`` records the lineage.

    Example:
        >>> model = finetune(loaded, loader, head=5, freeze="net.1.*", epochs=2)  # doctest: +SKIP
    """
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"finetune needs a bundle reference or a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(lr, float | int) or not lr > 0:
        raise UsageError(f"lr={lr!r}: the learning rate must be positive")
    if not isinstance(epochs, int) or epochs < 1:
        raise UsageError(f"epochs={epochs!r}: train at least one epoch")
    for p in model.parameters():
        p.requires_grad_(True)  # a fresh start: only ``freeze`` decides what stays fixed
    step: dict[str, Any] = {}
    if head is not None:
        step["head"] = head
        step["head_layer"] = replace_head(model, head)
    if freeze:
        frozen = freeze_parameters(model, freeze)
        step["freeze"] = freeze if isinstance(freeze, str) else list(freeze)
        step["frozen_parameters"] = sum(p.numel() for n, p in model.named_parameters() if n in set(frozen))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise UsageError(f"freeze {freeze!r} leaves nothing to train", hint="freeze fewer parameters")
    optimizer = torch.optim.Adam(trainable, lr=float(lr))
    before = dict(getattr(model, "_nbmodelpack_training", None) or {})
    history = fit(model, train_data, epochs=epochs, optimizer=optimizer, loss=loss, val_loader=val_data, metrics=metrics, device=device)
    recorded = dict(getattr(model, "_nbmodelpack_training", None) or {})
    model._nbmodelpack_training = {**before, **recorded, **step}  # type: ignore[assignment]  # read by pack
    model.fit_history = history  # type: ignore[assignment]  # plain attribute, not a submodule
    return model
