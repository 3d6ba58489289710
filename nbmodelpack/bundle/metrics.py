"""Metrics on cards, labelled by where they were measured (pure, no I/O).

A card's ``metrics`` is a dict of sections, each a dict of name -> value:
``train`` (on the training batches, during training), ``validation`` (on
held-out data the trainer or compressor was given), ``compression`` (size
ratio, output drift, latency of a compressed child) and ``reported`` (numbers
the packer passed in without saying where they come from). A version shows
only metrics measured on its own weights; a parent's metrics appear in the
lineage, as the parent's.

Cards written before sections existed hold a flat dict; :func:`sectioned`
reads both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .format import fmt_metric

TRAIN, VALIDATION, COMPRESSION, REPORTED = "train", "validation", "compression", "reported"
SECTIONS = (TRAIN, VALIDATION, COMPRESSION, REPORTED)
_COMPRESSION_KEYS = {"size_ratio", "output_drift_max", "latency_ms"}
_VAL_PREFIXES = ("val_", "validation_")


def is_sectioned(metrics: Mapping[str, Any]) -> bool:
    """True if every value is a section (a dict).

    Example:
        >>> is_sectioned({"train": {"loss": 0.2}}), is_sectioned({"loss": 0.2})
        (True, False)
    """
    return bool(metrics) and all(isinstance(v, Mapping) for v in metrics.values())


def sectioned(metrics: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``metrics`` as sections; a flat dict (older cards, or passed to ``pack``) is sorted into them.

    In a flat dict, ``val_…`` names are validation metrics and the compression
    figures are compression metrics; the rest are training metrics if the dict
    looks like a ``fit`` record (it has ``val_…`` names or ``epochs``), else
    ``reported``.

    Example:
        >>> sectioned({"loss": 0.3, "val_loss": 0.4, "epochs": 2})
        {'train': {'loss': 0.3, 'epochs': 2}, 'validation': {'loss': 0.4}}
        >>> sectioned({"accuracy": 97.0})
        {'reported': {'accuracy': 97.0}}
    """
    if not metrics:
        return {}
    if is_sectioned(metrics):
        return {str(k): dict(v) for k, v in metrics.items() if v}
    flat = {k: v for k, v in metrics.items() if not isinstance(v, Mapping)}
    from_fit = "epochs" in flat or any(k.startswith(_VAL_PREFIXES) for k in flat)
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        prefix = next((p for p in _VAL_PREFIXES if key.startswith(p)), None)
        if prefix:
            out.setdefault(VALIDATION, {})[key[len(prefix) :]] = value
        elif key in _COMPRESSION_KEYS:
            out.setdefault(COMPRESSION, {})[key] = value
        else:
            out.setdefault(TRAIN if from_fit else REPORTED, {})[key] = value
    return {s: out[s] for s in SECTIONS if s in out}


def labelled(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """One flat dict whose names say the section: ``{"validation accuracy": 97.1, …}``.

    Example:
        >>> labelled({"train": {"loss": 0.3}, "validation": {"accuracy": 97.0}})
        {'validation accuracy': 97.0, 'train loss': 0.3}
    """
    sections = sectioned(metrics)
    order = [VALIDATION, TRAIN, COMPRESSION, REPORTED] + [s for s in sections if s not in SECTIONS]
    return {f"{s} {k}": v for s in order for k, v in sections.get(s, {}).items()}


def text(metrics: Mapping[str, Any] | None) -> str:
    """One line for listings: ``validation accuracy 97.1, train loss 0.08``.

    Example:
        >>> text({"train": {"loss": 0.08}, "validation": {"accuracy": 97.1}})
        'validation accuracy 97.1, train loss 0.08'
    """
    return ", ".join(f"{k} {fmt_metric(v)}" for k, v in labelled(metrics).items())
