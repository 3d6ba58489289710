"""The one Python API: every door (magic, CLI, REST, sidebar) calls these functions.

The bundle verbs are defined here; the transforms (compress, encrypt, sign),
the remote verbs and ``fit`` are defined in their own layers and re-exported,
so a door needs ``nbmodelpack.api`` only. Torch is imported only inside the
functions that need it; ``fit`` and the compression names resolve on first use.

Example:
    >>> from nbmodelpack import api
    >>> api.export.__name__
    'export'
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import (
    crypto,  # noqa: F401 - registers the +age layer codec with the store
    signing,  # noqa: F401 - registers the trust policy as a pull check
)
from .bundle.draft import child_recipe
from .bundle.info import BundleInfo
from .bundle.refs import parse, validate_name
from .crypto import Passphrase, decrypt, encrypt, keygen_age, recipient_of
from .errors import UnsafeFileError, UsageError
from .exchange import export, import_, layout_members, ref_text
from .progress import progress
from .pytorch.tracking import History, Tracker, track
from .remote import (
    PublishResult,
    Remote,
    add_remote,
    list_remote,
    list_remotes,
    login,
    publish,
    published,
    pull,
    remove_remote,
)
from .signing import (
    VerifyResult,
    enforce_trust_policy,
    export_files,
    fingerprint,
    keygen_signing,
    sign,
    verify,
)
from .store import FsckProblem, Store, StoredBundle, get_store

if TYPE_CHECKING:
    import torch

    from .compression import Comparison, CompressionReport, compare, compress
    from .pytorch.fit import fit

# Re-exported on first use: these modules import torch, which a listing of the store does not need.
_LAZY = {"fit": "pytorch.fit", **dict.fromkeys(["Comparison", "CompressionReport", "compare", "compress"], "compression")}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __package__), name)


def pack(
    model: torch.nn.Module,
    name: str,
    *,
    example: Any = None,
    labels: Iterable[Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    metrics: dict[str, Any] | str | None = "auto",
    description: str | None = None,
    tags: Iterable[str] = (),
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_code: bool = False,
    license: str | None = None,
    datasets: Iterable[str] | None = None,
    shard_size: int | str | None = None,
    store: Store | str | None = None,
) -> BundleInfo:
    """Pack a module as the next version of bundle ``name``.

    Weights larger than ``shard_size`` (bytes, or text such as ``"500MB"``; default
    ``[pack] shard_size`` in config.toml, else 2 GiB) are written as Hugging Face style
    shards (``model-00001-of-00003.safetensors`` … and ``model.safetensors.index.json``),
    each its own layer.

    ``metrics="auto"`` takes the metrics of the last :func:`nbmodelpack.fit` of this model
    (labelled ``train`` and ``validation``; a flat dict is kept as given and shown as ``reported``,
    except ``val_…`` names, shown as validation).
    A model loaded from a bundle packs as its child: the recipe names the parent
    and the step (``finetune`` if it was trained since, with how), and the card
    shows the parent's metrics in the lineage, never as this version's.

    Example:
        >>> info = nbmodelpack.pack(model, "mnist-mlp", example=torch.zeros(1, 1, 28, 28))  # doctest: +SKIP
        >>> info.ref  # doctest: +SKIP
        'mnist-mlp:1'
    """
    from .pytorch.capture import capture, draft_from
    from .pytorch.verify import store_and_check
    from .pytorch.weights import shard_bytes

    validate_name(name)
    limit = shard_bytes(shard_size)
    target = get_store(store)
    if metrics == "auto":
        metrics = getattr(model, "_nbmodelpack_metrics", None) or {}
    elif isinstance(metrics, str):
        raise UsageError(f"metrics={metrics!r}: pass a dict or 'auto'")
    elif metrics is not None and not isinstance(metrics, dict):
        raise UsageError(f"metrics: expected a dict or 'auto', got {type(metrics).__name__}")
    with progress(total=4, desc=f"pack {name}", unit="step") as bar:
        captured = capture(model, example=example, labels=labels, preprocess=preprocess, arch=arch, arch_kwargs=arch_kwargs, trust_code=trust_code, shard_size=limit)
        bar.update(1)
        # Writes the layers and proves they load back: a version that would not load is never committed.
        layers = store_and_check(target, name, captured, model, example, trust_code=trust_code)
        bar.update(2)
        draft = draft_from(captured, layers, name=name, metrics=metrics, description=description, license=license, datasets=list(datasets or []))
        parent = getattr(model, "bundle_info", None)
        if isinstance(parent, BundleInfo):
            training = getattr(model, "_nbmodelpack_training", None)
            draft.recipe = child_recipe(parent.recipe, digest=parent.digest, ref=parent.ref, metrics=parent.metrics, op="finetune" if training else "pack", params=training)
        info = target.commit(draft, tags=tags)
        bar.update(1)
    if isinstance(parent, BundleInfo):
        # The module now is this version: more training and another pack make its child.
        model.bundle_info = info  # type: ignore[assignment]
        model._nbmodelpack_training = None  # type: ignore[assignment]
    return info


def load(
    ref: str | StoredBundle,
    *,
    trust_code: bool = False,
    identity: Any = None,
    device: str = "cpu",
    dequantize: bool = False,
    store: Store | str | None = None,
    verify: bool = False,
    arch: str | None = None,
    int8_kernel: str | None = None,
) -> torch.nn.Module:
    """Load a bundle version as a trainable module in eval mode.

    ``module.bundle_info`` says what it is; ``module.bundle_form`` which form came
    back: ``"class"`` (an allowed importable class), ``"modules"`` (a ``Sequential``/
    ``ModuleList``/``ModuleDict`` of allowed layers, rebuilt from data), ``"live class"`` (the class of
    that name defined in this kernel), ``"source"`` (stored source, only with
    ``trust_code=True``; being in this store or signed does not grant it) or
    ``"graph"`` (the export graph: ``.train()``/``.eval()`` work, parameters require
    grad; ``pytorch.restore.form_note(module)`` says how to get the class back).

    Compressed bundles load like any other. int8 weights are dequantized at load
    (weight-only: float kernels at the parent's speed, and an item's output does not
    depend on the rest of its batch); ``int8_kernel="dynamic"`` runs Linear layers on
    torch's dynamic int8 kernel (int8 activations too) instead. ``None`` follows what
    ``compress(int8_kernel=...)`` recorded; ``dequantize=True`` means ``"weight-only"``.
    Encrypted layers are decrypted in memory with ``identity`` (an age identity
    file or string, or ``nbmodelpack.Passphrase``; default: the keys directory).
    Under a trust policy the bundle's signature is verified first (once per bundle,
    trust policy and unchanged blob files; ``verify=True`` checks it again).
    The weights were hashed when they entered the store and are re-hashed only if
    their file changed since; ``verify=True`` re-hashes them anyway. ``ref`` may
    also be a bundle already opened with ``Store.open``, or a remote's
    ``REMOTE/NAME:TAG``, which is pulled first (with a progress bar).

    A ModelPack artifact made by another tool (no ``architecture.json``) loads when
    it has ``model.safetensors`` and a Hugging Face ``config.json``: transformers
    builds that model type's own class (``bundle_form == "transformers"``; no remote
    code, no download). ``arch="module.Class"`` names the class yourself: one the
    allow-list permits (torch, torchvision, ``[trust] modules``; built with no
    arguments) or a transformers model class (built from ``config.json``).

    Example:
        >>> model = nbmodelpack.load("mnist-mlp:1")  # doctest: +SKIP
    """
    from .pytorch.restore import restore
    from .signing import enforce_trust_policy

    if isinstance(ref, str) and not parse(ref_text(ref, "load")).is_local:
        ref = pull(ref, store=store).ref  # what `ls --remote` lists loads as it reads
    bundle = ref if isinstance(ref, StoredBundle) else get_store(store).open(ref_text(ref, "load"))
    enforce_trust_policy(bundle, verify=verify)  # a no-op unless config.toml sets [trust] require_signature
    if arch is not None or not bundle.has("architecture.json"):
        from .pytorch.foreign import restore_foreign

        return restore_foreign(bundle, arch=arch, trust_code=trust_code, identity=identity, device=device, verify=verify)
    return restore(bundle, trust_code=trust_code, identity=identity, device=device, dequantize=dequantize, verify=verify, int8_kernel=int8_kernel)


def finetune(
    model: torch.nn.Module | str,
    train_data: Iterable[Any],
    *,
    val_data: Iterable[Any] | None = None,
    freeze: str | list[str] | None = None,
    head: int | None = None,
    epochs: int = 3,
    lr: float = 1e-3,
    device: str = "cpu",
    trust_code: bool = False,
    identity: Any = None,
    store: Store | str | None = None,
    **fit_kwargs: Any,
) -> torch.nn.Module:
    """Fine-tune a bundle version (a ref, or a module loaded from one); return the trained module.

    ``freeze`` is a glob over parameter names (``"net.1.*"``) whose weights stay
    fixed; ``head=N`` replaces the last ``Linear`` by a fresh one with ``N``
    outputs. Training is :func:`nbmodelpack.fit` with Adam at ``lr`` (live
    dashboard; ``model.fit_history`` holds the run). The module keeps its
    parent's ``bundle_info``: :func:`pack` records ``finetune of NAME:VERSION``
    with these settings, and the card shows the child's own train and
    validation metrics. finetune never packs by itself.

    Example:
        >>> child = nbmodelpack.finetune("mnist-mlp:1", loader, head=5, freeze="net.1.*", epochs=3)  # doctest: +SKIP
        >>> nbmodelpack.pack(child, "digits-5-9").parent_line  # doctest: +SKIP
        'finetune of mnist-mlp:1'
    """
    from .pytorch.finetune import finetune as run

    module = load(model, trust_code=trust_code, identity=identity, device=device, store=store) if isinstance(model, str) else model
    return run(module, train_data, val_data=val_data, freeze=freeze, head=head, epochs=epochs, lr=lr, device=device, **fit_kwargs)


def ls(name: str | None = None, *, store: Store | str | None = None) -> list[BundleInfo]:
    """Every local bundle version, newest first per name, with where each was published.

    Example:
        >>> [i.ref for i in nbmodelpack.ls()]  # doctest: +SKIP
        ['mnist-mlp:2', 'mnist-mlp:1']
    """
    if name is not None:
        validate_name(name)
    target = get_store(store)
    places = published.places(target)
    return [dataclasses.replace(i, published=places.get(i.digest, [])) for i in target.list(name)]


def show(ref: str, *, store: Store | str | None = None) -> BundleInfo:
    """One version's :class:`BundleInfo`, with where it was published.

    Example:
        >>> nbmodelpack.show("mnist-mlp:latest").version  # doctest: +SKIP
        2
    """
    target = get_store(store)
    info = target.info(ref_text(ref, "show"))
    return dataclasses.replace(info, published=published.places(target).get(info.digest, []))


def card(ref: str, *, store: Store | str | None = None) -> str:
    """The model card (``README.md``) of a version, as Markdown text."""
    return get_store(store).open(ref_text(ref, "card")).card().render()


def tag(ref: str, new_tag: str, *, store: Store | str | None = None) -> BundleInfo:
    """Add or move a tag: ``tag("mnist-mlp:3", "prod")``."""
    return get_store(store).tag(ref_text(ref, "tag"), ref_text(new_tag, "tag"))


def rm(ref: str, *, store: Store | str | None = None) -> list[str]:
    """Remove a version (all its tags); its blobs go at the next :func:`gc`.

    Example:
        >>> nbmodelpack.rm("mnist-mlp:1")  # doctest: +SKIP
        ['mnist-mlp:1']
    """
    return get_store(store).remove(ref_text(ref, "rm"))


def gc(*, store: Store | str | None = None, grace_seconds: float = 3600.0) -> tuple[int, int]:
    """Delete unreferenced blobs older than ``grace_seconds``; return ``(count, bytes)``."""
    return get_store(store).gc(grace_seconds=grace_seconds)


def fsck(*, store: Store | str | None = None) -> list[FsckProblem]:
    """Re-hash every blob; return the problems found (empty: healthy)."""
    return get_store(store).fsck()


def import_pth(
    path: str | Path,
    name: str,
    *,
    arch: str,
    arch_kwargs: dict[str, Any] | None = None,
    example: Any = None,
    store: Store | str | None = None,
    **pack_kwargs: Any,
) -> BundleInfo:
    """Import a legacy ``.pth``/``.pt`` state dict safely (``torch.load(weights_only=True)``).

    A file that needs anything beyond tensors and containers is refused, naming
    the globals it would have run; nothing in it is executed.

    Example:
        >>> nbmodelpack.import_pth("old.pth", "legacy", arch="mypkg.nets:Net")  # doctest: +SKIP
    """
    import pickle

    import torch

    from .pytorch.resolve import resolve_architecture
    from .pytorch.restore import construct, put_weights

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"no such file: {file}")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(file)) if hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint") else []
        listed = ", ".join(unsafe) if unsafe else str(exc).splitlines()[0][:160]
        raise UnsafeFileError(f"{file.name} needs code to load ({listed})", hint="re-save it as a plain state_dict, or pack the model instead") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise UsageError(f"{file.name} is not a PyTorch checkpoint: {str(exc).splitlines()[0][:120]}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{file.name} does not hold a state_dict of tensors")
    factory, kwargs = resolve_architecture(arch, dict(arch_kwargs or {}), trust_code=bool(pack_kwargs.get("trust_code")))
    module = put_weights(construct(factory, kwargs, dict(obj)), dict(obj))
    return pack(module, name, example=example, arch=arch, arch_kwargs=arch_kwargs, store=store, metrics={}, **pack_kwargs)


def to_json(obj: Any) -> str:
    """JSON text of API results (BundleInfo, lists of them, problems)."""

    def default(o: Any) -> Any:
        if hasattr(o, "to_json"):
            return o.to_json()
        if isinstance(o, FsckProblem):
            return {"digest": o.digest, "filepath": o.filepath, "problem": o.problem}
        return str(o)

    return json.dumps(obj, default=default, indent=2)


__all__ = [
    "BundleInfo",
    "Comparison",
    "CompressionReport",
    "FsckProblem",
    "History",
    "Passphrase",
    "PublishResult",
    "Remote",
    "Store",
    "StoredBundle",
    "Tracker",
    "VerifyResult",
    "add_remote",
    "card",
    "compare",
    "compress",
    "decrypt",
    "encrypt",
    "enforce_trust_policy",
    "export",
    "export_files",
    "finetune",
    "fingerprint",
    "fit",
    "fsck",
    "gc",
    "get_store",
    "import_",
    "import_pth",
    "keygen_age",
    "keygen_signing",
    "layout_members",
    "list_remote",
    "list_remotes",
    "load",
    "login",
    "ls",
    "pack",
    "parse",
    "publish",
    "recipient_of",
    "pull",
    "remove_remote",
    "rm",
    "show",
    "sign",
    "tag",
    "to_json",
    "track",
    "verify",
]
