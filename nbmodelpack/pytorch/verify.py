"""pack proves the bundle loads: rebuild what was just written, from the store, and compare outputs.

The check runs before the version is committed, on the stored layers (a
provisional manifest that no index names), through the path ``load`` takes in a
fresh process without trust: the allowed class, else the export graph. The
class defined in the packing process is not used, because a fresh process will
not have it.

For weights above :data:`FULL_CHECK_BYTES` the stored files are not read back
(that would map a second copy of a big model): their headers must list exactly
the names, dtypes and shapes of the tensors that were streamed into them (whose
bytes were hashed as they were written), and the rebuilt architecture runs the
example on the model's own tensors, shared, not copied.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..bundle.manifest import Descriptor, Manifest
from ..errors import ArchitectureError, ModelPackError
from ..store import Store, StoredBundle
from .capture import weights_state
from .quantize import Int8Linear
from .restore import load_state, rebuild
from .weights import check_index_of, stored_headers

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
    store: Store, name: str, layers: list[Descriptor], model: torch.nn.Module, example: Any, *, trust_code: bool = False
) -> None:
    """Rebuild the stored layers as a fresh process would and compare with ``model`` on ``example``.

    Raises a one-line :class:`ArchitectureError` if the bundle would not load or
    would compute something else. ``trust_code`` (the packer's own source) is used
    only for a bundle whose sole form is its source: otherwise the graph is checked.

    Example:
        >>> check_loads(store, "mnist-mlp", layers, model, torch.zeros(2, 1, 28, 28))  # doctest: +SKIP
    """
    provisional = StoredBundle(store, name, Manifest(config=layers[0], layers=tuple(layers), annotations={}, digest="sha256:" + "0" * 64, raw=b""))
    try:
        weight_bytes = sum(provisional.descriptor(f).size for f in provisional.weight_files())
        state = load_state(provisional) if weight_bytes <= FULL_CHECK_BYTES else _streamed_state(provisional, model)
        trust = trust_code and not provisional.has("model.pt2")
        loaded, form = rebuild(provisional, state, live=False, trust_code=trust)
    except ModelPackError as exc:
        raise ArchitectureError(f"{name} would not load back: {exc.message}", hint=_hint(exc.message)) from exc
    except Exception as exc:  # rebuilding runs torch and the model's own code, which raise anything
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ArchitectureError(f"{name} would not load back: {reason}", hint=_hint(reason)) from exc
    if example is None:
        return
    args = tuple(example) if isinstance(example, tuple | list) else (example,)
    was_training = model.training
    with contextlib.suppress(NotImplementedError):
        model.eval()
    try:
        with torch.no_grad():
            want = _tensors(model(*args))
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


def _streamed_state(bundle: StoredBundle, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's own tensors, once the stored weight files' headers are shown to hold exactly them."""
    kept = weights_state(model)[0]
    check_index_of(bundle)
    stored: dict[str, tuple[str, tuple[int, ...]]] = {}
    for entries in stored_headers(bundle).values():
        stored.update(entries)
    want = {k: (str(v.dtype), tuple(v.shape)) for k, v in kept.items()}
    if stored != want:
        differ = sorted(set(stored.items()) ^ set(want.items()))
        raise ArchitectureError(f"the stored weights differ from the model's ({differ[0][0] if differ else 'tensor set'})")
    return kept


def _close(want: torch.Tensor, got: torch.Tensor, *, int8: bool) -> bool:
    if int8:
        return bool((want - got).abs().max() <= INT8_RELATIVE * got.abs().max().clamp_min(1e-6)) if got.numel() else True
    return torch.allclose(want, got, rtol=RTOL, atol=ATOL)


def _hint(reason: str) -> str:
    if "meta" in reason and "attribute" in reason:
        return "a submodule named 'meta' clashes with torch.fx's GraphModule.meta; rename it, or make the class importable"
    return "make the model class importable (a module, not a notebook cell), or pass arch= naming it"
