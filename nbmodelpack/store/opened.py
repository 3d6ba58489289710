"""An opened bundle version (:class:`StoredBundle`) and the codecs that unwrap its layers.

Layer codecs: an encoding (``+age``, ``+zstd``: the layer's ``mt.ENCODING`` names, or the
legacy media-type suffixes) -> a function that unwraps one layer's bytes. Transforms register theirs (crypto registers ``+age``), so the
store never imports them. Decoding is bounded: ``+zstd`` is accepted on weight
layers only and never inflates past the size the manifest records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import io
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

from .._files import load_json_limited
from ..bundle import mediatypes as mt
from ..bundle.architecture import describe
from ..bundle.card import Card
from ..bundle.foreign import HF_CONFIG, config_facts, holdings, kind_of, load_plan
from ..bundle.format import plain
from ..bundle.info import BundleInfo
from ..bundle.manifest import MAX_CONFIG_BYTES, Descriptor, Manifest
from ..bundle.shards import weight_filepaths
from ..config import trusted_modules
from ..errors import BundleFormatError, BundleNotFound, ModelPackError, StoreError
from .streams import CappedWriter, InflatingWriter

if TYPE_CHECKING:
    from . import Store

# Arguments: the opened bundle, the layer, its stored bytes, the identity (a key, or None).
Codec = Callable[["StoredBundle", Descriptor, bytes, Any], bytes]
# The streaming form: unwrap from ``source`` (the stored bytes, read in order) into ``sink``.
# Arguments: the opened bundle, the layer, source, sink, the identity.
StreamCodec = Callable[["StoredBundle", Descriptor, IO[bytes], IO[bytes], Any], None]
_CODECS: dict[str, Codec] = {}
_STREAM_CODECS: dict[str, StreamCodec] = {}

# Without a recorded plain size (bundles written before it was recorded), a zstd layer may
# inflate to 64x its stored size: int8 weights with most values pruned compress ~10-20x, so
# 64x leaves room while a bomb (zeros compress ~30,000x) stops early. The absolute ceiling
# bounds what such a guess may ever allocate; larger unannotated layers are re-written by
# `compress`, which records the size.
UNRECORDED_RATIO = 64
UNRECORDED_CEILING = 8 << 30
# JSON layers (architecture, signature, processing, shard index) are small; 16 MiB leaves
# room for label lists of very large classifiers.
MAX_JSON_LAYER_BYTES = 16 << 20
# Writes into the plaintext's memfd are gathered to this size (pyrage hands out 8 KiB pieces).
UNWRAP_BUFFER = 1 << 20


def register_codec(suffix: str, decode: Codec, *, stream: StreamCodec | None = None) -> None:
    """Let the store unwrap layers whose media type ends with ``suffix``.

    ``stream`` is the same decoder reading a file and writing a stream: weights are
    unwrapped with it straight into memory (:meth:`StoredBundle.plain_file`).

    Example:
        >>> register_codec("+rot13", lambda bundle, desc, data, identity: data)
    """
    _CODECS[suffix] = decode
    if stream is not None:
        _STREAM_CODECS[suffix] = stream


def codec(suffix: str) -> Codec:
    try:
        return _CODECS[suffix]
    except KeyError:
        if suffix not in (mt.AGE_SUFFIX, mt.ZSTD_SUFFIX):
            raise BundleFormatError(f"a layer is wrapped as {suffix[1:]!r:.40}, which nbmodelpack does not know", hint="it was not written by nbmodelpack") from None
        # ``nbmodelpack.api`` imports crypto, which registers ``+age``: reached only below the API.
        raise StoreError(f"no codec for {suffix} layers", hint="import nbmodelpack.crypto first") from None


def stream_codec(suffix: str) -> StreamCodec:
    try:
        return _STREAM_CODECS[suffix]
    except KeyError:
        raise StoreError(f"no streaming codec for {suffix} layers", hint="import nbmodelpack.crypto first") from None


def plain_size(desc: Descriptor) -> int | None:
    """The unwrapped size the manifest records for a layer (``PLAIN_SIZE``), if it records one.

    Example:
        >>> plain_size(Descriptor("x", "sha256:" + "0" * 64, 3, {mt.PLAIN_SIZE: "10"}))
        10
    """
    text = desc.annotations.get(mt.PLAIN_SIZE)
    if text is None:
        return None
    if not text.isdigit():
        raise BundleFormatError(f"{desc.filepath}: {mt.PLAIN_SIZE} is {text!r:.40}, not a byte count")
    return int(text)


def inflate_limit(desc: Descriptor, stored: int) -> int:
    """The most bytes a zstd layer may inflate to: its recorded size (never over 64× its stored size), else that bound.

    Example:
        >>> inflate_limit(Descriptor("x", "sha256:" + "0" * 64, 1000), 1000)
        64000
    """
    recorded = plain_size(desc)
    by_ratio = UNRECORDED_RATIO * max(stored, 1)
    if recorded is not None:
        # The annotation is the packer's word: a hostile one could record a terabyte. No real
        # weights compress 64-fold, so the ratio bounds it too.
        return min(recorded, by_ratio)
    return min(by_ratio, UNRECORDED_CEILING)


def zstd_inflater(desc: Descriptor, out: IO[bytes], stored: int) -> InflatingWriter:
    """The one zstd inflater: writes into ``out``, refusing more than :func:`inflate_limit` allows.

    ``stored`` is the compressed size. zstd hands its output over in small pieces and the
    cap is checked on each, so a bomb stops at the limit, never allocating more; a frame
    header's declared size and the manifest's ``PLAIN_SIZE`` are checked by ``finish()``.

    Example:
        >>> inflater = zstd_inflater(desc, out, desc.size)  # doctest: +SKIP
        >>> inflater.write(compressed); inflater.finish()  # doctest: +SKIP
    """
    if mt.base_media_type(desc.media_type) != mt.WEIGHT:
        raise BundleFormatError(f"{desc.filepath} is zstd-compressed, which only weight layers may be")
    limit = inflate_limit(desc, stored)
    too_big = BundleFormatError(
        f"{desc.filepath} inflates to more than {limit:,} bytes, more than its manifest allows",
        hint="the bundle may be a decompression bomb; it was not loaded",
    )
    return InflatingWriter(CappedWriter(out, limit, too_big), what=desc.filepath, expected=plain_size(desc))


def inflate_zstd(bundle: StoredBundle, desc: Descriptor, data: bytes, identity: Any) -> bytes:
    """Inflate a weight layer held in memory, through :func:`zstd_inflater` (the codec for ``+zstd`` layers)."""
    out = io.BytesIO()
    inflater = zstd_inflater(desc, out, len(data))
    inflater.write(data)
    inflater.finish()
    return out.getvalue()  # shares the buffer: no copy


def _wrapping(desc: Descriptor) -> tuple[str, ...]:
    """A layer's encodings, innermost first, refused unless in the one order we write (zstd, then age)."""
    wrapping = desc.encodings
    if len(set(wrapping)) != len(wrapping) or wrapping[-1:] == (mt.ZSTD,) and mt.AGE in wrapping:
        # We compress before we encrypt (ciphertext does not compress); any other order is not ours.
        raise BundleFormatError(f"{desc.filepath} is wrapped as {','.join(wrapping)[:60]!r}, an order nbmodelpack never writes")
    return wrapping


class StoredBundle:
    """One bundle version in a store, for reading its files (each verified on read).

    "Verified" means hashed now, or hashed by this user before with the blob file
    unchanged since (its verification record matches); ``verify=True`` always re-hashes.
    """

    def __init__(self, store: Store, name: str, manifest: Manifest) -> None:
        self.store = store
        self.name = name
        self.manifest = manifest

    def __repr__(self) -> str:
        return f"StoredBundle({self.name}@{self.digest[:19]}…)"

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @functools.cached_property
    def info(self) -> BundleInfo:
        """Name, tags and summary; read once per opened bundle (tags come from index.json)."""
        return self.listed(trusted_modules(), self.store.tags_of(self.name, self.digest))

    def listed(self, trusted: Sequence[str], tags: list[str]) -> BundleInfo:
        """The info a listing shows, with what ``load`` will do under ``trusted`` modules."""
        # Our summary says it all; another tool's artifact says what it is in its config.
        config = None if self.manifest.summary else self._config_or_none()
        info = BundleInfo.from_manifest(self.manifest, name=self.name, tags=tags, config=config)
        arch = self.architecture(trusted)
        if "class" in info.architecture and "class" not in arch:
            arch = {"class": info.architecture["class"], **arch}
        return dataclasses.replace(info, architecture=arch)

    def _config_or_none(self) -> dict[str, Any] | None:
        try:
            return self.config()
        except ModelPackError:
            return None  # a listing shows what can be read

    def architecture(self, trusted: Sequence[str]) -> dict[str, Any]:
        """What ``load`` will do, read from ``architecture.json`` itself.

        The manifest's summary is written by whoever packed the bundle, so listings show
        this instead: the stored strategy and class, and ``describe``'s one line under
        ``"load"`` (the same allow-list ``load`` applies).
        """
        if not self.has("architecture.json"):
            return {"load": self.foreign_plan()[1]}
        try:
            arch = self.read_json("architecture.json")
        except ModelPackError as exc:
            return {"load": f"unreadable architecture.json ({exc.message[:80]})"}
        if not isinstance(arch, dict):
            return {"load": describe(arch, trusted)}
        out = {k: str(arch[k]) for k in ("strategy", "class") if isinstance(arch.get(k), str)}
        return {**out, "load": describe(arch, trusted)}

    def foreign_plan(self) -> tuple[str | None, str]:
        """For an artifact without ``architecture.json``: ``(model_type, line)`` as :func:`load_plan` says.

        ``model_type`` is set when ``load`` can build the model through transformers from
        ``config.json``; the line says what the artifact holds and what is missing otherwise.
        """
        hf = None
        if self.has(HF_CONFIG):
            try:
                hf = self.read_json(HF_CONFIG)
            except ModelPackError as exc:
                return None, f"unreadable {HF_CONFIG} ({exc.message[:80]})"
        model_type, line = load_plan(self.manifest.layers, hf, transformers=importlib.util.find_spec("transformers") is not None)
        return model_type, line if model_type else f"{line}; holds {holdings(self.manifest.layers)}"

    def descriptor(self, filepath: str) -> Descriptor:
        desc = self.manifest.layer(filepath)
        if desc is None:
            raise BundleNotFound(f"{filepath} in {self.name}@{self.digest[:19]}…")
        return desc

    def has(self, filepath: str) -> bool:
        return self.manifest.layer(filepath) is not None

    def read(self, filepath: str, *, limit: int | None = None, verify: bool = False) -> bytes:
        """The stored (possibly compressed or encrypted) bytes of a layer, verified."""
        return self.store.read_blob(self.descriptor(filepath).digest, what=filepath, limit=limit, verify=verify)

    def plaintext(self, filepath: str, *, identity: Any = None, limit: int | None = None, verify: bool = False) -> bytes:
        """A small layer's content with its wrappers removed: age-decrypted (in memory), then zstd-inflated.

        For weights, :meth:`plain_file` and :meth:`unwrap_into` stream instead.
        """
        desc = self.descriptor(filepath)
        data = self.read(filepath, limit=limit, verify=verify)  # ciphertext and compressed bytes are verified before decoding
        for encoding in reversed(_wrapping(desc)):  # outermost wrapper first
            data = codec("+" + encoding)(self, desc, data, identity)
        return data

    def weight_files(self) -> list[str]:
        """The layers that hold the weights, in load order: ``model.safetensors`` or its shards."""
        return weight_filepaths(d.filepath for d in self.manifest.layers)

    @contextlib.contextmanager
    def plain_file(self, filepath: str, *, identity: Any = None, verify: bool = False) -> Iterator[str]:
        """A path to a layer's plaintext for the duration of the block (for safetensors to map).

        A plain layer is its blob file, checked against its digest before the block ends.
        A wrapped layer (age, zstd) is unwrapped into an anonymous in-memory file
        (``memfd``): plaintext never touches the disk. The blob is not re-hashed while its
        verification record matches the file (it was hashed when it entered the store);
        ``verify`` asks for a full re-hash anyway.
        """
        desc = self.descriptor(filepath)
        if not desc.encodings:
            check = self.store.check_blob(desc.digest, what=filepath, verify=verify)
            try:
                yield str(self.store.blob_path(desc.digest))
            finally:
                check()  # a damaged blob is an integrity error before anything is handed out
            return
        fd = os.memfd_create(f"nbmodelpack-{filepath}", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", buffering=UNWRAP_BUFFER, closefd=False) as out:
                self.unwrap_into(filepath, out, identity=identity, verify=verify)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)

    def unwrap_into(self, filepath: str, out: IO[bytes], *, identity: Any = None, verify: bool = False, inflate: bool = True) -> None:
        """Stream a wrapped layer's plaintext into ``out``: decrypted and inflated on the way, one chunk at a time.

        ``inflate=False`` stops after decryption (``decrypt`` keeps compressed layers compressed).
        The stored bytes are hashed on another thread while they are decoded; a
        mismatch is raised (in preference to any decoding error) before this
        returns, so nothing written to ``out`` may be used until it returns.

        Example:
            >>> with open(os.memfd_create("w"), "wb") as out:  # doctest: +SKIP
            ...     bundle.unwrap_into("model.safetensors", out, identity="~/.age/me.txt")
        """
        desc = self.descriptor(filepath)
        with self.store.reading_blob(desc.digest, what=filepath, verify=verify) as source:  # no hash while its record matches
            self._decode_stream(desc, source, out, identity, inflate=inflate)

    def _decode_stream(self, desc: Descriptor, source: IO[bytes], out: IO[bytes], identity: Any, *, inflate: bool = True) -> None:
        wrapping = _wrapping(desc)
        encrypted = mt.AGE in wrapping
        sink = out
        inflater = None
        if mt.ZSTD in wrapping and inflate:
            inflater = zstd_inflater(desc, out, desc.size)
            sink = cast(IO[bytes], inflater)
        if encrypted:
            stream_codec(mt.AGE_SUFFIX)(self, desc, source, sink, identity)
        else:
            shutil.copyfileobj(source, sink, UNWRAP_BUFFER)
        if inflater is not None:
            inflater.finish()

    def read_json(self, filepath: str, *, identity: Any = None) -> Any:
        """A JSON layer, parsed with size and depth caps."""
        raw = self.plaintext(filepath, identity=identity, limit=MAX_JSON_LAYER_BYTES)
        return load_json_limited(raw, what=filepath, max_bytes=MAX_JSON_LAYER_BYTES)

    def card(self) -> Card:
        """The model card (``README.md``); for an artifact without one, a card made from its config and layers."""
        if not self.has("README.md"):
            info = self.info
            front = {"name": self.name, "digest": self.digest, "model card": "none (README.md is not in this artifact)"}
            front.update({k: v for k, v in config_facts(self._config_or_none()).items()})
            lines = [f"# {plain(self.name)}", "", "This artifact has no model card (README.md).", ""]
            lines += [f"- {plain(d.filepath or d.digest[:19])}: {kind_of(d)}, {d.size:,} bytes" for d in self.manifest.layers]
            lines += ["", f"load: {info.architecture_line}"]
            return Card(front, "\n".join(lines))
        return Card.parse(self.read("README.md", limit=MAX_JSON_LAYER_BYTES).decode("utf-8", "replace"))

    def config(self) -> dict[str, Any]:
        data = self.store.read_blob(self.manifest.config.digest, what="config", limit=MAX_CONFIG_BYTES)
        doc = load_json_limited(data, what="config", max_bytes=MAX_CONFIG_BYTES)
        if not isinstance(doc, dict):
            raise BundleFormatError("config is not a JSON object")
        return doc


register_codec(mt.ZSTD_SUFFIX, inflate_zstd)
