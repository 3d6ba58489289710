"""pack proves the bundle loads: rebuild what was just written, from the store, and compare outputs.

The check runs before the version is committed, on the stored layers (a
provisional manifest that no index names), through the path ``load`` takes in a
fresh process without trust: the allowed class, else the export graph. The
class defined in the packing process is not used, because a fresh process will
not have it.

For weights above :data:`FULL_CHECK_BYTES` the weight files are not read back
(that would map a second copy of a big model): the rebuilt architecture runs the
example on the model's own tensors (shared, not copied: exactly the bytes being
streamed into the store and hashed as they go), on one thread while the weights
are written on another.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from ..bundle.manifest import Descriptor, Manifest
from ..errors import ArchitectureError, ModelPackError
from ..store import Store, StoredBundle
from .capture import Captured, store_files
from .int8dynamic import Int8Linear
from .restore import load_state, rebuild
from .weights import SafetensorsStream

# Outputs of the rebuilt model may differ from the original by kernel rounding only.
RTOL, ATOL = 1e-4, 1e-5
INT8_RELATIVE = 0.05
FULL_CHECK_BYTES = 256 << 20


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in _tensors(v)]
    values = getattr(out, "values", None)  # output dataclasses (e.g. transformers' ModelOutput)
    return [t for v in values() for t in _tensors(v)] if callable(values) else []


def check_loads(
    store: Store,
    name: str,
    layers: list[Descriptor],
    model: torch.nn.Module,
    example: Any,
    *,
    trust_code: bool = False,
    expected: Any = None,
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Rebuild the stored layers as a fresh process would and compare with ``model`` on ``example``.

    Raises a one-line :class:`ArchitectureError` if the bundle would not load or
    would compute something else. ``trust_code`` (the packer's own source) is used
    only for a bundle whose sole form is its source: otherwise the graph is checked.
    ``expected`` is ``model``'s output on ``example`` in eval mode, if already computed;
    ``state`` the tensors being stored, when the weight layers are not read back.

    Example:
        >>> check_loads(store, "mnist-mlp", layers, model, torch.zeros(2, 1, 28, 28))  # doctest: +SKIP
    """
    provisional = StoredBundle(store, name, Manifest(config=layers[0], layers=tuple(layers), annotations={}, digest="sha256:" + "0" * 64, raw=b""))
    shared = state is not None
    try:
        state = load_state(provisional) if state is None else state
        trust = trust_code and not provisional.has("model.pt2")
        loaded, form = rebuild(provisional, state, live=False, trust_code=trust)
    except ModelPackError as exc:
        raise ArchitectureError(f"{name} would not load back: {exc.message}", hint=_hint(exc.message)) from exc
    except Exception as exc:  # rebuilding runs torch and the model's own code, which raise anything
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ArchitectureError(f"{name} would not load back: {reason}", hint=_hint(reason)) from exc
    if example is None or (shared and form in ("class", "modules") and same_structure(model, loaded)):
        return
    args = tuple(example) if isinstance(example, tuple | list) else (example,)
    was_training = model.training
    with contextlib.suppress(NotImplementedError):
        model.eval()
    try:
        with torch.no_grad():
            want = _tensors(model(*args) if expected is None else expected)
            got = _tensors(loaded.eval()(*(a.cpu() if isinstance(a, torch.Tensor) else a for a in args)))
    except Exception as exc:  # the model's own forward may raise anything
        raise ArchitectureError(f"{name} would not load back: its {form} fails on the example ({str(exc).splitlines()[0][:120]})") from exc
    finally:
        with contextlib.suppress(NotImplementedError):
            model.train(was_training)
    # A model running the int8 kernel stands for its float weights (what is stored): its
    # outputs carry int8 activation rounding, a few percent of their scale.
    int8 = any(isinstance(m, Int8Linear) for m in model.modules())
    same = len(want) == len(got) and all(
        w.shape == g.shape and _close(w.detach().cpu().float(), g.float(), int8=int8) for w, g in zip(want, got, strict=True)
    )
    if not same:
        raise ArchitectureError(
            f"{name} would not load back faithfully: its {form} computes other outputs on the example",
            hint="make the model class importable (a module, not a notebook cell) and pack again",
        )


# Weight files written at once by pack.
PARALLEL_WRITES = 2


def store_and_check(store: Store, name: str, captured: Captured, model: torch.nn.Module, example: Any, *, trust_code: bool = False) -> list[Descriptor]:
    """Write the captured files as blobs and run :func:`check_loads` on them; return the layers in capture order.

    Big weights are written on a second thread while the check runs on the model's own tensors.

    Example:
        >>> layers = store_and_check(store, "mnist-mlp", captured, model, torch.zeros(1, 1, 28, 28))  # doctest: +SKIP
    """
    streams = [f for f in captured.files if isinstance(f[2], SafetensorsStream)]
    objects = [c for _, _, c in streams if isinstance(c, SafetensorsStream)]  # (narrows the type for mypy)
    if sum(c.nbytes for c in objects) <= FULL_CHECK_BYTES:
        layers = store_files(store, captured.files)
        check_loads(store, name, layers, model, example, trust_code=trust_code, expected=captured.example_output)
        return layers
    small = store_files(store, [f for f in captured.files if not isinstance(f[2], SafetensorsStream)])
    # Shards are written side by side: each is hashed as it is written, and sha256 (one core
    # per stream) rather than the disk sets the pace, so two shards use both cores.
    with ThreadPoolExecutor(min(len(streams), PARALLEL_WRITES), thread_name_prefix="nbmodelpack-weights") as pool:
        writing = [pool.submit(store_files, store, [stream]) for stream in streams]
        try:
            written_state = {k: t for c in objects for k, t in c.tensors.items()}
            check_loads(store, name, small, model, example, trust_code=trust_code, expected=captured.example_output, state=written_state)
            written = [d for w in writing for d in w.result()]
        except BaseException:
            # A refused check, a failed write or a Ctrl-C stops the writes at their next chunk (their temp files are removed).
            for c in objects:
                c.cancelled = True
            for w in writing:
                with contextlib.suppress(Exception):
                    w.result()
            raise
    by_path = {d.filepath: d for d in [*small, *written]}
    return [by_path[f[0]] for f in captured.files]


_PLAIN = (bool, int, float, str, type(None), tuple, list, torch.dtype, torch.device)


def _settings(module: torch.nn.Module) -> dict[str, Any]:
    # ``training`` is not a setting: the check runs both in eval mode.
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training" and isinstance(v, _PLAIN)}


def same_structure(model: torch.nn.Module, rebuilt: torch.nn.Module) -> bool:
    """Is ``rebuilt`` the same modules with the same settings holding the very same tensors as ``model``?

    Then both compute the same function, and a big model's check need not run the example
    through both. Hooks on ``model`` (which ``rebuilt`` lacks) or any other difference send
    the check back to comparing outputs.

    Example:
        >>> same_structure(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))  # other tensors
        False
    """
    mine, theirs = dict(model.named_modules()), dict(rebuilt.named_modules())
    if mine.keys() != theirs.keys():
        return False
    for name, module in mine.items():
        other = theirs[name]
        hooks = (module._forward_hooks, module._forward_pre_hooks, getattr(module, "_state_dict_pre_hooks", {}))
        if type(module) is not type(other) or any(hooks) or _settings(module) != _settings(other):
            return False
    want, got = model.state_dict(keep_vars=True), rebuilt.state_dict(keep_vars=True)
    return want.keys() == got.keys() and all(
        w.data_ptr() == got[k].data_ptr() and w.shape == got[k].shape and w.stride() == got[k].stride() and w.dtype == got[k].dtype
        for k, w in want.items()
    )


def _close(want: torch.Tensor, got: torch.Tensor, *, int8: bool) -> bool:
    if int8:
        return bool((want - got).abs().max() <= INT8_RELATIVE * got.abs().max().clamp_min(1e-6)) if got.numel() else True
    return torch.allclose(want, got, rtol=RTOL, atol=ATOL)


def _hint(reason: str) -> str:
    if "meta" in reason and "attribute" in reason:
        return "a submodule named 'meta' clashes with torch.fx's GraphModule.meta; rename it, or make the class importable"
    return "make the model class importable (a module, not a notebook cell), or pass arch= naming it"
