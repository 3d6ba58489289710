"""The one Python API: every door (magic, CLI, REST, sidebar) calls these functions.

The bundle verbs are defined here; the transforms (compress, encrypt, sign),
the remote verbs and ``fit`` are defined in their own layers and re-exported,
so a door needs ``nbmodelpack.api`` only. Torch is imported only inside the
functions that need it (``fit`` resolves on first use).

Example:
    >>> from nbmodelpack import api
    >>> api.export.__name__
    'export'
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import crypto  # noqa: F401 - registers the +age layer codec with the store
from .bundle.info import BundleInfo
from .bundle.refs import parse, validate_name
from .compression import Comparison, CompressionReport, compare, compress
from .crypto import Passphrase, decrypt, encrypt, keygen_age, recipient_of
from .errors import BundleFormatError, StoreError, UnsafeFileError, UsageError
from .progress import History, Tracker, progress, track
from .remote import (
    PublishResult,
    Remote,
    add_remote,
    list_remote,
    list_remotes,
    login,
    publish,
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

    from .pytorch.fit import fit

ExportFormat = Literal["tar", "dir", "files"]


def __getattr__(name: str) -> Any:
    # ``fit`` needs torch at import time; resolve it on first use so ``api`` stays torch-free.
    if name == "fit":
        from .pytorch.fit import fit

        return fit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _ref_text(ref: object, verb: str) -> str:
    """``ref`` as a reference string; anything else is a one-line :class:`UsageError`."""
    if isinstance(ref, str):
        return ref
    raise UsageError(f"{verb} needs a bundle reference such as 'mnist-mlp:1', got {type(ref).__name__}", hint="pass the reference as a string")


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

    validate_name(name)
    target = get_store(store)
    if metrics == "auto":
        metrics = getattr(model, "_nbmodelpack_metrics", None) or {}
    elif isinstance(metrics, str):
        raise UsageError(f"metrics={metrics!r}: pass a dict or 'auto'")
    with progress(total=3, desc=f"pack {name}", unit="step") as bar:
        captured = capture(model, example=example, labels=labels, preprocess=preprocess, arch=arch, arch_kwargs=arch_kwargs, trust_code=trust_code)
        bar.update(1)
        layers = store_files(target, captured.files)
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
    """Load a bundle version as a module in eval mode (``module.bundle_info`` says what it is).

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

    bundle = ref if isinstance(ref, StoredBundle) else get_store(store).open(_ref_text(ref, "load"))
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
    return get_store(store).info(_ref_text(ref, "show"))


def card(ref: str, *, store: Store | str | None = None) -> str:
    """The model card (``README.md``) of a version, as Markdown text."""
    return get_store(store).open(_ref_text(ref, "card")).card().render()


def tag(ref: str, new_tag: str, *, store: Store | str | None = None) -> BundleInfo:
    """Add or move a tag: ``tag("mnist-mlp:3", "prod")``."""
    return get_store(store).tag(_ref_text(ref, "tag"), _ref_text(new_tag, "tag"))


def rm(ref: str, *, store: Store | str | None = None) -> list[str]:
    """Remove a version (all its tags); its blobs go at the next :func:`gc`.

    Example:
        >>> nbmodelpack.rm("mnist-mlp:1")  # doctest: +SKIP
        ['mnist-mlp:1']
    """
    return get_store(store).remove(_ref_text(ref, "rm"))


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

    from .pytorch.capture import _resolve
    from .pytorch.restore import _put_weights

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
    factory = _resolve(arch)
    module = factory(**dict(arch_kwargs or {}))
    _put_weights(module, dict(obj))
    return pack(module, name, example=example, arch=arch, arch_kwargs=arch_kwargs, store=store, metrics={}, **pack_kwargs)


def export(ref: str, out: str | Path, *, format: ExportFormat = "tar", store: Store | str | None = None) -> Path:
    """Write one version to ``out``: an OCI layout as a ``.tar`` file or a directory, or its plain files.

    ``format="tar"`` writes one tar file, ``"dir"`` an OCI layout directory
    (added to the layout already there, if any), ``"files"`` the bundle's files
    by filepath, as stored (what ``model_signing verify`` checks), into a new or
    empty directory. The layout tags the manifest ``NAME:VERSION`` and
    ``VERSION``, so ``skopeo inspect oci-archive:FILE.tar:VERSION`` works. A
    refused or failed export leaves nothing at ``out``.

    Example:
        >>> nbmodelpack.export("mnist-mlp:1", "mnist.tar")  # doctest: +SKIP
        >>> nbmodelpack.export("mnist-mlp:1", "mnist-files", format="files")  # doctest: +SKIP
    """
    text_ref = _ref_text(ref, "export")
    out_path = Path(out).expanduser()
    if format == "files":
        if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
            raise UsageError(f"{out_path} is not empty", hint="export into a new or empty directory")
        return _write_beside(out_path, lambda tmp: export_files(text_ref, tmp, store=store), what=f"the files of {text_ref}")
    source = get_store(store)
    bundle = source.open(text_ref)
    digests = [bundle.manifest.config.digest, *(d.digest for d in bundle.manifest.layers)]
    tags = list(bundle.info.tags)

    def fill(root: Path) -> Path:
        layout = Store(root)
        for digest in digests:
            layout.put_chunks(source.iter_blob(digest), expected=digest)
        layout.add_manifest(bundle.name, bundle.manifest.raw, tags)
        (layout.root / ".lock").unlink(missing_ok=True)  # an exported layout carries no lock file
        return root

    if format == "dir":
        if (out_path / "index.json").is_file():
            return fill(out_path)  # add to an existing layout (OCI layouts hold many manifests)
        if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
            raise UsageError(f"{out_path} is neither an OCI layout nor empty", hint="export into a new or empty directory")
        return _write_beside(out_path, fill, what=text_ref)
    if format != "tar":
        raise UsageError(f"format={format!r}: use 'tar', 'dir' or 'files'")
    if str(out).endswith("/") or out_path.is_dir():
        raise UsageError(f"{out_path} is a directory", hint="give a FILE.tar, or export with format='dir' (--dir)")
    with tempfile.TemporaryDirectory(dir=out_path.parent if out_path.parent.exists() else None) as tmp:
        layout_root = fill(Path(tmp) / "layout")
        part = out_path.with_name(out_path.name + ".part")
        try:
            with tarfile.open(part, "w") as tar:
                for item in ("oci-layout", "index.json", "blobs"):
                    tar.add(layout_root / item, arcname=item, filter=_no_temp)
            part.replace(out_path)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise StoreError(f"cannot write {out_path}: {exc.strerror or exc}") from exc
    return out_path


def _write_beside(target: Path, write: Any, *, what: str) -> Path:
    """Run ``write(tmp)`` on a fresh directory beside ``target``, then rename it to ``target``.

    Whatever ``write`` refuses or fails on, nothing is left at ``target`` (nor
    any parent directory this call created).
    """
    missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        write(tmp)
        if target.is_dir():
            target.rmdir()  # checked empty by the caller; a rename cannot replace it otherwise
        tmp.rename(target)
    except ValueError as exc:  # a filepath the file system cannot hold, e.g. a NUL byte
        raise BundleFormatError(f"cannot export {what}: {exc}", hint="the bundle names a file that cannot exist on disk") from exc
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc.strerror or exc}", hint="check the path and the free space") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for created in reversed(missing):
            if created.is_dir() and not target.exists():
                shutil.rmtree(created, ignore_errors=True)
    return target


def _no_temp(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if Path(info.name).name.startswith(".tmp-") else info


# An OCI layout tar holds these and nothing else: the allow-list import checks before extracting.
_LAYOUT_FILES = {"oci-layout", "index.json"}
_LAYOUT_DIRS = {"blobs", "blobs/sha256"}
_MAX_MEMBERS = 100_000  # a bundle has a handful of blobs; a layout of many bundles stays far below
_MAX_SMALL_FILE = 4 * 1024 * 1024  # index.json and oci-layout, capped as OCI distribution caps manifests


def _is_blob_name(name: str) -> bool:
    head, _, digest = name.rpartition("/")
    return head == "blobs/sha256" and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def layout_members(tar: tarfile.TarFile, *, free_bytes: int) -> list[tarfile.TarInfo]:
    """The members of an OCI layout tar, checked against the allow-list; anything else is refused.

    Only ``oci-layout``, ``index.json``, ``blobs/``, ``blobs/sha256/`` and
    regular files named by a sha256 digest pass (an optional leading ``./``
    aside): no links, devices, absolute paths, ``..``, duplicates, more than
    100,000 members, or more bytes than ``free_bytes``.

    Example:
        >>> import io
        >>> buf = io.BytesIO()
        >>> with tarfile.open(fileobj=buf, mode="w") as t:
        ...     t.addfile(tarfile.TarInfo("../evil"), io.BytesIO())
        >>> _ = buf.seek(0)
        >>> layout_members(tarfile.open(fileobj=buf), free_bytes=1 << 30)
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.UsageError: not an OCI layout: the tar holds '../evil' (an OCI layout holds oci-layout, index.json and blobs/sha256/ only)
    """
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    for member in tar:
        if len(members) >= _MAX_MEMBERS:
            raise UsageError(f"not an OCI layout: more than {_MAX_MEMBERS:,} members")
        name = member.name[2:] if member.name.startswith("./") else member.name
        name = name.rstrip("/") if member.isdir() else name
        if name in ("", "."):
            continue
        ok_file = member.isreg() and (name in _LAYOUT_FILES or _is_blob_name(name))
        ok_dir = member.isdir() and name in _LAYOUT_DIRS
        if not (ok_file or ok_dir) or name in seen:
            kind = "a second" if name in seen else "a link or device" if not (member.isreg() or member.isdir()) else ""
            what = f"{kind} {name!r}".strip() if kind else repr(name)
            raise UsageError(f"not an OCI layout: the tar holds {what}", hint="an OCI layout holds oci-layout, index.json and blobs/sha256/ only")
        if name in _LAYOUT_FILES and member.size > _MAX_SMALL_FILE:
            raise UsageError(f"not an OCI layout: {name} is {member.size:,} bytes (at most {_MAX_SMALL_FILE:,})")
        total += member.size
        if total > free_bytes:
            raise UsageError(f"the tar holds more than the {free_bytes:,} bytes free for the store", hint="free some space, or import an unpacked layout directory")
        seen.add(name)
        member.name = name
        members.append(member)
    if "index.json" not in seen:
        raise UsageError("not an OCI layout: the tar has no index.json")
    return members


def import_(path: str | Path, *, name: str | None = None, store: Store | str | None = None) -> list[BundleInfo]:
    """Import bundles from an OCI layout (``.tar`` or directory), verifying every blob.

    A tar is checked against the layout's allow-list (:func:`layout_members`)
    before anything is extracted, and unpacked into the store's staging area; a
    refused import adds no bundle.

    Example:
        >>> nbmodelpack.import_("mnist.tar")  # doctest: +SKIP
    """
    src = Path(path).expanduser()
    if not src.exists():
        raise UsageError(f"no such file: {src}")
    target = get_store(store)
    if src.is_dir():
        return _import_layout(src, target, name)
    staging = target.root / "staging" / f"import-{uuid.uuid4().hex}"
    try:
        try:
            with tarfile.open(src) as tar:
                staging.mkdir(parents=True)
                members = layout_members(tar, free_bytes=shutil.disk_usage(staging).free)
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError) as exc:
            reason = "not a tar file" if isinstance(exc, tarfile.ReadError) else str(exc).splitlines()[0].rstrip(":")
            raise UsageError(f"{src.name} is not an OCI layout tar: {reason}", hint="export one with `modelpack export REF -o FILE.tar`") from exc
        except OSError as exc:
            raise StoreError(f"cannot import {src.name}: {exc.strerror or exc}") from exc
        return _import_layout(staging, target, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _index_entries(root: Path) -> list[dict[str, Any]]:
    """The manifest entries of the OCI layout at ``root`` (its ``index.json``, capped at 4 MiB)."""
    index = root / "index.json"
    try:
        if index.stat().st_size > _MAX_SMALL_FILE:
            raise UsageError(f"not an OCI layout: index.json is over {_MAX_SMALL_FILE:,} bytes")
        doc = json.loads(index.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"not an OCI layout: {root.name}/index.json cannot be read ({type(exc).__name__})") from exc
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("digest"), str) for e in entries):
        raise UsageError("not an OCI layout: index.json has no list of manifests")
    return entries


def _import_layout(root: Path, target: Store, name: str | None) -> list[BundleInfo]:
    from .bundle.manifest import parse_manifest

    layout = Store(root, create=False)
    by_digest: dict[str, list[str]] = {}
    for entry in _index_entries(root):
        annotations = entry.get("annotations")
        ref_name = annotations.get("org.opencontainers.image.ref.name", "") if isinstance(annotations, dict) else ""
        by_digest.setdefault(str(entry["digest"]), []).append(str(ref_name))
    # Read and check every manifest first, then copy blobs, then add the versions:
    # a layout refused halfway adds no bundle (copied blobs go at the next gc).
    planned = []
    for digest, ref_names in by_digest.items():
        raw = layout.read_blob(digest, what="manifest")
        manifest = parse_manifest(raw, digest)
        bundle_name = validate_name(str(name or manifest.summary.get("name") or _name_from_refs(ref_names)))
        version = manifest.summary.get("version")
        tags = [str(version)] if version is not None else []
        tags += [r.rsplit(":", 1)[-1] for r in ref_names if r and not r.rsplit(":", 1)[-1].isdigit()]
        planned.append((manifest, bundle_name, raw, sorted(set(tags)) or ["latest"]))
    for manifest, _, _, _ in planned:
        for desc in (manifest.config, *manifest.layers):
            target.put_chunks(layout.iter_blob(desc.digest), expected=desc.digest, what=desc.filepath or "config")
    return [target.add_manifest(bundle_name, raw, tags) for _, bundle_name, raw, tags in planned]


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
