"""A ``file://`` remote: an OCI image layout directory (a team share), read and written as a store.

Repositories are bundle names in the layout's ``index.json``; all share one blob
directory, so a blob is present for every repository at once and nothing needs a
mount. Reads are held to the same limits as a registry's answers: the share may be
written by someone hostile.

Example:
    >>> import tempfile
    >>> t = LayoutTransport("share", Path(tempfile.mkdtemp()))
    >>> t.tags("mnist-mlp")
    []
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..bundle.manifest import Descriptor, sha256_digest
from ..errors import BundleNotFound, IntegrityError, ModelPackError, RemoteError, StoreError
from ..store import Store
from ..store.blobs import open_blob
from .transport import MANIFEST_CAP, OnBytes, read_capped, read_exactly

INDEX_CAP = 64 << 20  # index.json of a share: about 150,000 tags


class LayoutTransport:
    """An OCI layout directory as a remote (see the module docstring)."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self._store: Store | None = None

    def _layout(self, *, create: bool = False) -> Store:
        index = self.root / "index.json"
        with contextlib.suppress(OSError):
            if index.stat().st_size > INDEX_CAP:  # the store reads it whole, on every lookup
                raise RemoteError(f"{index} is larger than {INDEX_CAP >> 20} MiB", hint="the share is damaged or hostile; nothing was read")
        if self._store is None:
            if not create and not (self.root / "index.json").exists():
                raise RemoteError(f"{self.root} is not an OCI layout (no index.json)", hint="check the path with `modelpack remote ls`")
            try:
                self._store = Store(self.root, create=create, records=False)  # records are per user: none in a share
            except ModelPackError as exc:
                raise RemoteError(f"cannot use {self.root}: {exc.message}", hint=exc.hint or "check the path and its permissions") from exc
        return self._store

    def where(self, repo: str) -> str:
        return str(self.root)

    def ping(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise RemoteError(f"{self.root} is not a directory", hint="check the path with `modelpack remote ls`")

    def repositories(self) -> list[str] | None:
        if not (self.root / "index.json").exists():
            return []
        return self._layout().names()

    def tags(self, repo: str) -> list[str]:
        if not (self.root / "index.json").exists():
            return []
        return [t for (name, _), ts in self._layout().refs().items() if name == repo for t in ts]

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        layout = self._layout()
        sep = "@" if reference.startswith("sha256:") else ":"
        try:
            _, digest = layout.resolve(f"{repo}{sep}{reference}")
        except BundleNotFound as exc:
            raise BundleNotFound(f"{self.name}/{repo}:{reference}", hint=f"`modelpack ls --remote {self.name}` lists what is there") from exc
        try:
            with open_blob(layout.blob_path(digest)) as f:  # no links, FIFOs or devices
                raw = read_capped(f.read, MANIFEST_CAP, what="a manifest", where=str(self.root))
        except FileNotFoundError as exc:
            raise IntegrityError(f"the manifest of {repo}:{reference} is missing from {self.root}", hint="the share is damaged; publish the version again") from exc
        except OSError as exc:
            raise IntegrityError(f"the manifest of {repo}:{reference} in {self.root} is not a regular file", hint="the share is damaged or hostile; nothing was read") from exc
        if sha256_digest(raw) != digest:
            raise IntegrityError(f"manifest of {repo}:{reference} in {self.root} does not match {digest[:19]}…", hint="the share's copy is damaged; nothing was written")
        return raw, digest

    def put_manifest(self, repo: str, raw: bytes, digest: str, tags: list[str]) -> None:
        self._layout(create=True).add_manifest(repo, raw, tags)

    def has_blob(self, repo: str, digest: str) -> bool:
        return (self.root / "index.json").exists() and self._layout().has_blob(digest)

    def mount(self, repo: str, digest: str, from_repo: str) -> bool:
        return False  # one blob directory for every repository: has_blob already said yes

    def get_blob(self, repo: str, desc: Descriptor, on_bytes: OnBytes) -> Iterator[bytes]:
        what = desc.filepath or "config"
        try:
            f = open_blob(self._layout().blob_path(desc.digest))  # no links, FIFOs or devices; closed by the generator
        except FileNotFoundError as exc:
            raise IntegrityError(f"{what} is missing from {self.root}", hint="the share is damaged; publish the version again") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {what} in {self.root}: {exc.strerror}", hint="check the share is mounted and readable") from exc

        def chunks() -> Iterator[bytes]:
            with f:
                yield from read_exactly(f.read, desc.size, what=what, where=str(self.root), on_bytes=on_bytes)

        return chunks()

    def put_blob(self, repo: str, desc: Descriptor, path: Path, on_bytes: OnBytes) -> int:
        # A local copy restarts cheaply; the store's put_chunks writes a temp file and renames.
        with open(path, "rb") as f:
            source = read_exactly(f.read, desc.size, what=desc.filepath or "config", where="the local store", on_bytes=on_bytes)
            self._layout(create=True).put_chunks(source, expected=desc.digest, what=desc.filepath or "config")
        return desc.size
