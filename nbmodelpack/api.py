"""The Python API: every front door (magic, CLI, REST, sidebar) calls these functions.

Torch is imported only inside the functions that need it.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import (
    crypto,  # noqa: F401 - registers the +age layer codec with the store
    signing,  # noqa: F401 - registers the trust policy as a pull check
)
from .bundle.info import BundleInfo
from .bundle.refs import parse, validate_name
from .errors import ModelPackError, StoreError, UnsafeFileError, UsageError
from .progress import progress
from .store import FsckProblem, Store, StoredBundle, get_store

if TYPE_CHECKING:
    import torch

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
    store: Store | str | None = None,
) -> BundleInfo:
    """Pack a module as the next version of bundle ``name``.

    ``metrics="auto"`` takes the metrics of the last :func:`nbmodelpack.fit` of this model.

    Example:
        >>> info = nbmodelpack.pack(model, "mnist-mlp", example=torch.zeros(1, 1, 28, 28))  # doctest: +SKIP
        >>> info.ref  # doctest: +SKIP
        'mnist-mlp:1'
    """
    from .pytorch.capture import capture, draft_from, store_files
    from .pytorch.verify import check_loads

    validate_name(name)
    target = get_store(store)
    if metrics == "auto":
        metrics = getattr(model, "_nbmodelpack_metrics", None) or {}
    elif isinstance(metrics, str):
        raise UsageError(f"metrics={metrics!r}: pass a dict or 'auto'")
    with progress(total=4, desc=f"pack {name}", unit="step") as bar:
        captured = capture(model, example=example, labels=labels, preprocess=preprocess, arch=arch, arch_kwargs=arch_kwargs, trust_code=trust_code)
        bar.update(1)
        layers = store_files(target, captured.files)
        bar.update(1)
        check_loads(target, name, layers, model, example, trust_code=trust_code)  # a version that would not load is never committed
        bar.update(1)
        draft = draft_from(captured, layers, name=name, metrics=metrics, description=description, license=license, datasets=list(datasets or []))
        info = target.commit(draft, tags=tags)
        bar.update(1)
    return info


def load(
    ref: str | StoredBundle,
    *,
    trust_code: bool = False,
    identity: Any = None,
    device: str = "cpu",
    dequantize: bool = False,
    store: Store | str | None = None,
) -> torch.nn.Module:
    """Load a bundle version as a trainable module in eval mode.

    ``module.bundle_info`` says what it is; ``module.bundle_form`` which form came
    back: ``"class"`` (an allowed importable class), ``"live class"`` (the class of
    that name defined in this kernel), ``"source"`` (stored source, only with
    ``trust_code=True``; being in this store or signed does not grant it) or
    ``"graph"`` (the export graph: ``.train()``/``.eval()`` work, parameters require
    grad; ``pytorch.restore.form_note(module)`` says how to get the class back).

    Compressed bundles load like any other; ``dequantize=True`` runs int8 weights
    as plain float instead of the int8 kernel.
    Encrypted layers are decrypted in memory with ``identity`` (an age identity
    file or string, or ``nbmodelpack.Passphrase``; default: the keys directory).
    Under a trust policy the bundle's signature is verified first. ``ref`` may
    also be a bundle already opened with ``Store.open``.

    Example:
        >>> model = nbmodelpack.load("mnist-mlp:1")  # doctest: +SKIP
    """
    from .pytorch.restore import restore
    from .signing import enforce_trust_policy

    bundle = ref if isinstance(ref, StoredBundle) else get_store(store).open(ref)
    enforce_trust_policy(bundle)  # a no-op unless config.toml sets [trust] require_signature
    return restore(bundle, trust_code=trust_code, identity=identity, device=device, dequantize=dequantize)


def ls(name: str | None = None, *, store: Store | str | None = None) -> list[BundleInfo]:
    """Every local bundle version, newest first per name.

    Example:
        >>> [i.ref for i in nbmodelpack.ls()]  # doctest: +SKIP
        ['mnist-mlp:2', 'mnist-mlp:1']
    """
    if name is not None:
        validate_name(name)
    return get_store(store).list(name)


def show(ref: str, *, store: Store | str | None = None) -> BundleInfo:
    """One version's :class:`BundleInfo`.

    Example:
        >>> nbmodelpack.show("mnist-mlp:latest").version  # doctest: +SKIP
        2
    """
    return get_store(store).info(ref)


def card(ref: str, *, store: Store | str | None = None) -> str:
    """The model card (``README.md``) of a version, as Markdown text."""
    return get_store(store).open(ref).card().render()


def tag(ref: str, new_tag: str, *, store: Store | str | None = None) -> BundleInfo:
    """Add or move a tag: ``tag("mnist-mlp:3", "prod")``."""
    return get_store(store).tag(ref, new_tag)


def rm(ref: str, *, store: Store | str | None = None) -> list[str]:
    """Remove a version (all its tags); its blobs go at the next :func:`gc`.

    Example:
        >>> nbmodelpack.rm("mnist-mlp:1")  # doctest: +SKIP
        ['mnist-mlp:1']
    """
    return get_store(store).remove(ref)


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


def export(ref: str, out: str | Path, *, store: Store | str | None = None) -> Path:
    """Write one version as an OCI layout: a ``.tar`` file, or a directory (``out`` ending in ``/`` or existing dir).

    The layout holds the manifest tagged ``NAME:VERSION`` and ``VERSION`` so
    ``skopeo inspect oci-archive:FILE.tar:VERSION`` works.

    Example:
        >>> nbmodelpack.export("mnist-mlp:1", "mnist.tar")  # doctest: +SKIP
    """
    source = get_store(store)
    bundle = source.open(ref)
    out_path = Path(out)
    as_dir = str(out).endswith("/") or out_path.is_dir() or not out_path.suffix
    digests = [bundle.manifest.config.digest, *(d.digest for d in bundle.manifest.layers)]
    tags = [t for t in bundle.info.tags]

    def fill(layout: Store) -> None:
        for digest in digests:
            layout.put_chunks(source.iter_blob(digest), expected=digest)
        layout.add_manifest(bundle.name, bundle.manifest.raw, tags)
        (layout.root / ".lock").unlink(missing_ok=True)  # an exported layout carries no lock file

    if as_dir:
        fill(Store(out_path))
        return out_path
    import tempfile

    with tempfile.TemporaryDirectory(dir=out_path.parent if out_path.parent.exists() else None) as tmp:
        layout = Store(Path(tmp) / "layout")
        fill(layout)
        part = out_path.with_name(out_path.name + ".part")
        try:
            with tarfile.open(part, "w") as tar:
                for item in ("oci-layout", "index.json", "blobs"):
                    tar.add(layout.root / item, arcname=item, filter=_no_temp)
            part.replace(out_path)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise StoreError(f"cannot write {out_path}: {exc.strerror or exc}") from exc
    return out_path


def _no_temp(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if Path(info.name).name.startswith(".tmp-") else info


def import_(path: str | Path, *, name: str | None = None, store: Store | str | None = None) -> list[BundleInfo]:
    """Import bundles from an OCI layout (``.tar`` or directory), verifying every blob.

    Example:
        >>> nbmodelpack.import_("mnist.tar")  # doctest: +SKIP
    """
    import tempfile

    src = Path(path)
    if not src.exists():
        raise UsageError(f"no such file: {src}")
    target = get_store(store)
    if src.is_dir():
        return _import_layout(Store(src, create=False), target, name)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tarfile.open(src) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise UsageError(f"{src.name} is not an OCI layout tar: {exc}") from exc
        return _import_layout(Store(tmp, create=False), target, name)


def _import_layout(layout: Store, target: Store, name: str | None) -> list[BundleInfo]:
    from .bundle.manifest import parse_manifest

    try:
        entries = layout._entries()
    except ModelPackError as exc:
        raise UsageError(f"not an OCI layout: {exc}") from exc
    by_digest: dict[str, list[str]] = {}
    for entry in entries:
        ref_name = (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name", "")
        by_digest.setdefault(str(entry["digest"]), []).append(ref_name)
    infos = []
    for digest, ref_names in by_digest.items():
        raw = layout.read_blob(digest, what="manifest")
        manifest = parse_manifest(raw, digest)
        bundle_name = name or manifest.summary.get("name") or _name_from_refs(ref_names)
        for desc in (manifest.config, *manifest.layers):
            target.put_chunks(layout.iter_blob(desc.digest), expected=desc.digest, what=desc.filepath or "config")
        version = manifest.summary.get("version")
        tags = [str(version)] if version is not None else []
        tags += [r.rsplit(":", 1)[-1] for r in ref_names if r and not r.rsplit(":", 1)[-1].isdigit()]
        infos.append(target.add_manifest(validate_name(str(bundle_name)), raw, sorted(set(tags)) or ["latest"]))
    return infos


def _name_from_refs(ref_names: list[str]) -> str:
    for r in ref_names:
        if ":" in r:
            return r.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    raise UsageError("cannot tell the bundle's name", hint="pass --name")


def to_json(obj: Any) -> str:
    """JSON text of API results (BundleInfo, lists of them, problems)."""

    def default(o: Any) -> Any:
        if hasattr(o, "to_json"):
            return o.to_json()
        if isinstance(o, FsckProblem):
            return {"digest": o.digest, "filepath": o.filepath, "problem": o.problem}
        return str(o)

    return json.dumps(obj, default=default, indent=2)


__all__ = ["card", "export", "fsck", "gc", "get_store", "import_", "import_pth", "load", "ls", "pack", "parse", "rm", "show", "tag"]
