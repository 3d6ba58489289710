"""A version's files by filepath, for model_signing (which hashes a directory) and ``export --files``.

Blobs are immutable: the files are hard links or fresh exclusive-create copies
in a new directory, every filepath plain, relative and unique, so nothing is
ever written through a path that is a store blob.

Example:
    >>> export_files("mnist-mlp:3", "mnist-files")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from ..bundle.manifest import Descriptor, check_filepaths
from ..errors import BundleFormatError, SignatureError, StoreError, UsageError
from ..store import Store, get_store
from ..store.archives import is_archive, unpack

COPY_BUFFER = 8 << 20


def safe_filepaths(layers: Iterable[Descriptor]) -> list[tuple[Descriptor, PurePosixPath]]:
    """Each layer with its filepath, refusing absolute, non-normalised or repeated ones.

    Two layers with one filepath would make the second file land on the first. The
    rules are the format's (:func:`~nbmodelpack.bundle.manifest.check_filepaths`), checked
    here again because a signature check may see layers no manifest parse has seen.
    """
    listed = list(layers)
    try:
        check_filepaths([d.filepath for d in listed])
    except BundleFormatError as exc:
        raise SignatureError(exc.message, hint="the manifest was not written by nbmodelpack") from exc
    return [(d, PurePosixPath(d.filepath)) for d in listed]


def _copy_new(src: Path, target: Path) -> None:
    """Copy ``src`` to a file that must not exist yet (never writes through an existing path or link)."""
    with open(src, "rb") as fin, open(target, "xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


@contextlib.contextmanager
def materialized(store: Store, layers: Iterable[Descriptor], name: str) -> Iterator[Path]:
    """The layers as files named by filepath in a fresh temp dir, hard-linked to the blobs where possible.

    model_signing hashes a directory, so the stored blobs appear there under
    their file names: hard links when the temp dir is on the store's device
    (nothing ever writes to them: every name is new and unique), else fresh
    copies made with exclusive creation (read-only share, other device).
    Encrypted layers stay ciphertext.
    """
    checked = safe_filepaths(layers)
    try:
        (Path(store.root) / "staging").mkdir(exist_ok=True)
        root = Path(store.root) / "staging" / f"sign-{uuid.uuid4().hex}"
        root.mkdir()
    except OSError:
        root = Path(tempfile.mkdtemp(prefix="nbmodelpack-sign-"))
    try:
        with store.blobs.linking(d.digest for d, _ in checked):
            yield from _link_into(store, checked, root / name)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _link_into(store: Store, checked: list[tuple[Descriptor, PurePosixPath]], files: Path) -> Iterator[Path]:
    """Fill ``files`` with the layers (links, else copies), yield it, and remove it again."""
    try:
        files.mkdir()
        for desc, rel in checked:
            target = files / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            blob = store.blob_path(desc.digest)
            if not blob.is_file():
                raise SignatureError(f"{desc.filepath} is missing from the store", hint="run `modelpack fsck`")
            try:
                os.link(blob, target)
            except FileExistsError as exc:  # cannot happen with unique names; never fall back to writing
                raise SignatureError(f"{desc.filepath} collides with another layer", hint="the manifest was not written by nbmodelpack") from exc
            except OSError:
                _copy_new(blob, target)
        yield files
    finally:
        shutil.rmtree(files, ignore_errors=True)  # the links go before the records are renewed


def export_files(ref: str, out: str | os.PathLike[str], *, store: Store | str | None = None, unpack_archives: bool = False) -> Path:
    """Write a version's files by filepath (as stored: ciphertext stays ciphertext) into directory ``out``.

    Each file is copied from its blob as it is verified, never whole in memory. The
    result is what ``model_signing verify key OUT --signature OUT/model.sig
    --public_key KEY.pub`` checks. ``unpack_archives`` unpacks model-spec tar layers in
    place of their tar (through the allow-list of :mod:`nbmodelpack.store.archives`).

    Example:
        >>> export_files("mnist-mlp:3", "mnist-files")  # doctest: +SKIP
    """
    bundle = get_store(store).open(ref)
    checked = safe_filepaths(bundle.manifest.layers)
    target = Path(out).expanduser()
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty", hint="export into a new or empty directory")
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        for desc, rel in checked:
            if unpack_archives and is_archive(desc):
                unpack(bundle, desc, target)
                continue
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with bundle.store.reading_blob(desc.digest, what=desc.filepath) as src, open(dest, "xb") as f:
                shutil.copyfileobj(src, f, COPY_BUFFER)
    except BaseException as exc:
        # A refused export leaves no partial directory.
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in list(target.iterdir()):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write into {target}: {exc.strerror or exc}") from exc
        raise
    return target
