"""Unpack the model-spec archive layers (``….v1.tar``, ``.tar+gzip``, ``.tar+zstd``) of a stored artifact.

Other ModelPack tools (modctl, KitOps) store each file or directory as a tar whose
entries carry the path the layer's ``org.cncf.model.filepath`` names. Unpacking is
an allow-list: regular files and directories only (no links, devices or FIFOs),
each entry's path plain and relative (as :func:`check_filepath` rules) and equal
to the layer's filepath or inside it, no entry written twice, and bounded: at most
:data:`MAX_ENTRIES` entries and, for a compressed tar, at most
:data:`MAX_RATIO` times its stored size (the zstd-bomb bound weights get).
Python's ``tarfile`` reads the format; the checks are ours (``tarfile``'s ``data``
filter allows links and does not bound sizes).
"""

from __future__ import annotations

import gzip
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..bundle import mediatypes as mt
from ..bundle.manifest import Descriptor, check_filepath
from ..errors import BundleFormatError, ModelPackError
from .opened import UNRECORDED_RATIO, StoredBundle

MAX_ENTRIES = 100_000
MAX_RATIO = UNRECORDED_RATIO
_CHUNK = 1 << 20


def is_archive(desc: Descriptor) -> bool:
    """Is this layer a model-spec tar (and not wrapped by us), so ``export --files`` unpacks it?

    Example:
        >>> is_archive(Descriptor(mt.WEIGHT_TAR, "sha256:" + "0" * 64, 1, {mt.FILEPATH: "w"}))
        True
    """
    return mt.archive_of(desc.media_type) is not None and not desc.encodings


@contextmanager
def _stream(bundle: StoredBundle, desc: Descriptor) -> Iterator[IO[bytes]]:
    """The layer's tar stream (decompressed as its media type says), from its verified blob."""
    import zstandard

    with bundle.store.reading_blob(desc.digest, what=desc.filepath) as raw:  # a damaged blob is an integrity error; the caller discards what was unpacked
        kind = mt.archive_of(desc.media_type)
        if kind == "gz":
            with gzip.GzipFile(fileobj=raw) as unzipped:
                yield unzipped  # type: ignore[misc]  # GzipFile is a binary file object
        elif kind == "zstd":
            with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as reader:
                yield reader  # type: ignore[misc]  # a readable binary stream
        else:
            yield raw


def entry_path(name: str, filepath: str) -> str:
    """The plain relative path of a tar entry, which must be ``filepath`` or lie inside it.

    Example:
        >>> entry_path("./tokenizer/vocab.txt", "tokenizer")
        'tokenizer/vocab.txt'
        >>> entry_path("../x", "x")
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.BundleFormatError: unreadable bundle: tar layer x: entry '../x' is not a plain relative path inside x
    """
    rel = name[2:] if name.startswith("./") else name
    rel = rel.rstrip("/") if rel not in ("", "/") else rel
    try:
        check_filepath(rel)
    except BundleFormatError:
        rel = ""
    if not rel or not (rel == filepath or rel.startswith(filepath + "/")):
        raise BundleFormatError(f"tar layer {filepath}: entry {name!r:.120} is not a plain relative path inside {filepath}")
    return rel


def unpack(bundle: StoredBundle, desc: Descriptor, target: Path) -> int:
    """Unpack archive layer ``desc`` into directory ``target`` (allow-list above); return the bytes written.

    Example:
        >>> unpack(bundle, bundle.descriptor("docs"), Path("out"))  # doctest: +SKIP
        1234
    """
    filepath = desc.filepath
    limit = desc.size if mt.archive_of(desc.media_type) == "" else MAX_RATIO * max(desc.size, 1)
    written = entries = 0
    try:
        with _stream(bundle, desc) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                entries += 1
                if entries > MAX_ENTRIES:
                    raise BundleFormatError(f"tar layer {filepath} has more than {MAX_ENTRIES:,} entries")
                dest = target / entry_path(member.name, filepath)
                if member.isdir():
                    if dest.exists() and not dest.is_dir():
                        raise BundleFormatError(f"tar layer {filepath}: {member.name!r:.120} is both a file and a directory")
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    raise BundleFormatError(f"tar layer {filepath}: {member.name!r:.120} is a link or special file, which a model artifact never needs")
                written += member.size
                if written > limit:
                    raise BundleFormatError(f"tar layer {filepath} unpacks to more than {limit:,} bytes", hint="the artifact may be a decompression bomb; nothing was exported")
                source = tar.extractfile(member)
                if source is None:
                    raise BundleFormatError(f"tar layer {filepath}: {member.name!r:.120} has no content")
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    out = open(dest, "xb")  # noqa: SIM115 - closed below; "x": an entry never overwrites another
                except FileExistsError:
                    raise BundleFormatError(f"tar layer {filepath}: {member.name!r:.120} is written twice (or over another layer)") from None
                with out:
                    while chunk := source.read(_CHUNK):
                        out.write(chunk)
    except ModelPackError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, gzip.BadGzipFile):
            raise
        raise BundleFormatError(f"tar layer {filepath} is not a valid {desc.media_type.rsplit('.', 1)[-1]} archive ({str(exc)[:80]})") from exc
    except Exception as exc:  # zstandard.ZstdError
        raise BundleFormatError(f"tar layer {filepath} is not a valid archive ({str(exc)[:80]})") from exc
    return written
