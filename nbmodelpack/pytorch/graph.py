"""A loaded ``torch.export`` graph made usable as a model: train/eval, gradients, its class name.

``ExportedProgram.module()`` returns a graph whose ``.train()``/``.eval()`` raise and
whose train/eval behaviour was frozen when it was traced (we trace in eval mode).
In the training IR that behaviour is a boolean argument of a few aten ops
(``batch_norm(..., training, ...)``, ``dropout(..., train)``), so switching mode
rewrites that argument on every node whose schema has one and recompiles. torch
2.14 has no public API for this (``torch.ao``'s ``move_exported_model_to_train``
is gone), hence this small pass.

Known limit: a model whose ``forward`` branches on ``self.training`` in Python (not in
an op) keeps the branch it was traced with; batch norm's ``num_batches_tracked``
counter does not advance (only ``momentum=None`` uses it); ``nn.RNN`` layers are
unrolled over the example's time steps, so their sequence length is fixed in the graph
(``nn.LSTM``/``nn.GRU`` stay one op of any length, see ``exporting``).
"""

from __future__ import annotations

import types
from typing import Any

import torch

_MODE_ARGS = ("train", "training")
# The attribute a loaded graph carries: the architecture record it was packed from
# (``{"class": ..., "kwargs": ...}``), so re-packing it keeps the original class name.
LOADED_ARCHITECTURE = "bundle_architecture"


def _mode_positions(target: Any) -> list[int]:
    """Indices of the boolean train/training arguments of an aten op (empty for others)."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        return []
    return [i for i, a in enumerate(schema.arguments) if a.name in _MODE_ARGS and str(a.type).startswith("bool")]


def set_mode(graph: torch.fx.GraphModule, mode: bool) -> None:
    """Make every train/eval-dependent op of ``graph`` behave as in ``mode``.

    Example:
        >>> ep = torch.export.export(torch.nn.Dropout(0.5).eval(), (torch.ones(2, 4),))
        >>> g = ep.module(); set_mode(g, True)
        >>> bool((g(torch.ones(2, 4)) == 0).any()) or True
        True
    """
    changed = False
    for node in graph.graph.nodes:
        if node.op != "call_function":
            continue
        for index in _mode_positions(node.target):
            name = node.target._schema.arguments[index].name
            if index < len(node.args):
                if node.args[index] is not mode:
                    node.args = (*node.args[:index], mode, *node.args[index + 1 :])
                    changed = True
            elif node.kwargs.get(name, None) is not mode:
                node.kwargs = {**node.kwargs, name: mode}
                changed = True
    if changed:
        graph.recompile()


def _train(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
    set_mode(self, mode)
    for module in self.modules():  # the graph's own train() raises; the flag is set directly
        module.training = mode
    return self


def _eval(self: torch.fx.GraphModule) -> torch.fx.GraphModule:
    return _train(self, False)


def trainable(graph: torch.nn.Module, *, training: bool = False) -> torch.nn.Module:
    """Give a loaded export graph working ``.train()``/``.eval()`` and parameters that require grad.

    Example:
        >>> g = trainable(torch.export.export(torch.nn.Linear(2, 1), (torch.ones(2, 2),)).module())
        >>> g.train().training, g.weight.requires_grad
        (True, True)
    """
    if not isinstance(graph, torch.fx.GraphModule):
        return graph
    graph.train = types.MethodType(_train, graph)  # type: ignore[method-assign]
    graph.eval = types.MethodType(_eval, graph)  # type: ignore[method-assign]
    for param in graph.parameters():
        if param.is_floating_point() or param.is_complex():
            param.requires_grad_(True)
    graph.train(training)
    return graph
