"""``torch.export`` of a model for a bundle: dynamic dimensions, plain outputs, no weights, no pickle.

Example:
    >>> blob = export_archive(torch.nn.Linear(4, 2), torch.randn(2, 4))
    >>> blob[:2]
    b'PK'
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.export._patches import (
    register_gru_while_loop_decomposition,
    register_lstm_while_loop_decomposition,
)

from .pt2archive import strip_pickles


def example_args(example: Any) -> tuple[Any, ...]:
    return tuple(example) if isinstance(example, tuple | list) else (example,)


def _plain(out: Any) -> Any:
    """Outputs as built-in containers: a graph's output types must exist in the loading process."""
    if isinstance(out, dict):
        return {k: _plain(v) for k, v in out.items()}
    if isinstance(out, tuple | list):
        return type(out)(_plain(v) for v in out) if type(out) in (tuple, list) else tuple(_plain(v) for v in out)
    return out


class _PlainOutputs(torch.nn.Module):
    """``model`` with its outputs made plain (e.g. transformers' ``ModelOutput`` → ``dict``).

    It shares the model's parameter, buffer and submodule tables, so the exported
    graph names every tensor exactly as ``model.state_dict()`` does.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self._inner_forward = model.forward
        for table in ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules"):
            self.__dict__[table] = model.__dict__[table]
        self.training = model.training

    def forward(self, *args: Any) -> Any:
        return _plain(self._inner_forward(*args))


@contextlib.contextmanager
def _dynamic_recurrence() -> Iterator[None]:
    """Trace ``nn.LSTM``/``nn.GRU`` without pinning the sequence length.

    The graph keeps them as one ``aten.lstm``/``aten.gru`` op (trainable, any length),
    but the shape tracing of their default decomposition unrolls over the example's
    time steps and so specializes that dimension. torch's while-loop decompositions
    trace the same op symbolically; they only change tracing, not the saved graph.
    (``nn.RNN`` has no such decomposition in torch: its sequence length stays fixed.)
    """
    with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own while loop uses its deprecated _check_is_size
        warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights")  # torch's own nn.RNNBase
        yield


def _drop_unused_symbols(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Forget range constraints of symbols the graph never mentions (the while loop's counter).

    torch warns at load about every such symbol.
    """
    used: set[Any] = set()
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        for v in val if isinstance(val, tuple | list) else (val,):
            if isinstance(v, torch.Tensor):
                for d in v.shape:
                    if isinstance(d, torch.SymInt):
                        used |= d.node.expr.free_symbols
            elif isinstance(v, torch.SymInt):
                used |= v.node.expr.free_symbols
    for sym in [s for s in ep.range_constraints if s not in used]:
        del ep.range_constraints[sym]
    return ep


@contextlib.contextmanager
def _quiet_specialization() -> Iterator[None]:
    """Silence torch's warning that a size-1 dimension stayed static (expected with ``Dim.AUTO``)."""
    log = logging.getLogger("torch._export.non_strict_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def export_program(model: torch.nn.Module, example: Any) -> torch.export.ExportedProgram:
    """``torch.export`` with every dimension dynamic where the model allows (weights still attached).

    ``Dim.AUTO`` keeps a dimension dynamic unless the model's code pins it; if export
    refuses that, only the batch dimension is dynamic.
    """
    # A batch of one would make export specialize the batch dimension to 1.
    args = tuple(torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == 1 else a for a in example_args(example))
    every = tuple({i: torch.export.Dim.AUTO for i in range(a.dim())} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in args)
    plain = _PlainOutputs(model)
    if any(isinstance(m, torch.nn.LSTM | torch.nn.GRU) for m in model.modules()):
        # torch.export raises many types; if this tracing fails, the usual one follows
        with contextlib.suppress(Exception), _quiet_specialization(), _dynamic_recurrence():
            return _drop_unused_symbols(torch.export.export(plain, args, dynamic_shapes={"args": every}))
    try:
        with _quiet_specialization():
            return torch.export.export(plain, args, dynamic_shapes={"args": every})
    except Exception:  # torch.export raises many types; the batch-only graph is the fallback
        batch = tuple({0: torch.export.Dim.AUTO} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in args)
        return torch.export.export(plain, args, dynamic_shapes={"args": batch})


def export_archive(model: torch.nn.Module, example: Any) -> bytes:
    """A checked ``model.pt2`` of ``model`` without its weights (they live in ``model.safetensors``).

    Example:
        >>> blob = export_archive(torch.nn.Linear(4, 2), torch.randn(2, 4))  # doctest: +SKIP
    """
    ep = export_program(model, example)
    # Strip the weights: the graph keeps names, shapes and dtypes; safetensors keeps the bytes.
    for key, value in list(ep.state_dict.items()):
        meta = torch.empty(value.shape, dtype=value.dtype, device="meta")
        ep.state_dict[key] = torch.nn.Parameter(meta, requires_grad=False) if isinstance(value, torch.nn.Parameter) else meta
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return strip_pickles(buf.getvalue())


# What the first export (pack) and the first graph load of a process import: torch's
# export tracer and its serializer, which pulls in torch._dynamo and sympy (seconds, once).
GRAPH_MODULES = (
    "torch.export._trace", "torch._export.serde.serialize", "torch.export._unlift",
    "torch.fx.experimental.validator", "torch._inductor.sizevars",  # imported by the first deserialization
)


def warm_up() -> None:
    """Import what ``torch.export`` needs now, so the first export or graph load does not wait for it.

    Example:
        >>> warm_up(); import sys; "torch.export._trace" in sys.modules
        True
    """
    for name in GRAPH_MODULES:
        with contextlib.suppress(ImportError):  # torch internals: another torch version may lack one
            importlib.import_module(name)
