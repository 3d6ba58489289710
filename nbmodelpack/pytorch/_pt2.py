"""Keep pickle out of ``torch.export`` archives (``model.pt2``).

``torch.export.save`` stores the example inputs as a pickle, and
``torch.export.load`` unpickles them — falling back to ``weights_only=False`` —
and also unpickles weights or constants marked ``use_pickle``. A bundle from
someone else could run code that way. So we write archives whose sample
inputs are empty and refuse, before ``torch.export.load`` sees it, any archive
that carries a pickle. (No torch API does this; the archive is a plain zip.)
"""

from __future__ import annotations

import io
import json
import zipfile

from ..errors import BundleFormatError, UnsafeFileError

_CONFIGS = ("model_weights_config.json", "model_constants_config.json")


def strip_pickles(blob: bytes) -> bytes:
    """Rewrite a fresh ``torch.export.save`` archive with empty sample inputs.

    Example:
        >>> strip_pickles(archive_bytes)  # doctest: +SKIP
    """
    src = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            dst.writestr(item, b"" if "/sample_inputs/" in item.filename else src.read(item))
    cleaned = out.getvalue()
    check_no_pickles(cleaned, what="the exported graph")
    return cleaned


def check_no_pickles(blob: bytes, *, what: str = "model.pt2") -> None:
    """Raise :class:`UnsafeFileError` if a ``.pt2`` archive holds anything torch would unpickle."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        items = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise BundleFormatError(f"{what} is not a torch.export archive") from exc
    for item in items:
        name = item.filename
        if "/sample_inputs/" in name and item.file_size:
            raise UnsafeFileError(f"{what} carries pickled sample inputs", hint="re-pack the model with nbmodelpack")
        if "/custom_objs/" in name or name.endswith((".pkl", ".pickle")):
            raise UnsafeFileError(f"{what} carries pickled objects ({name.rsplit('/', 1)[-1]})")
        if name.endswith(_CONFIGS):
            try:
                config = json.loads(archive.read(item)).get("config", {})
            except (json.JSONDecodeError, AttributeError) as exc:
                raise BundleFormatError(f"{what} has an unreadable {name.rsplit('/', 1)[-1]}") from exc
            pickled = [k for k, v in config.items() if isinstance(v, dict) and v.get("use_pickle")]
            if pickled:
                raise UnsafeFileError(f"{what} stores {pickled[0]} as a pickle", hint="tensor subclasses cannot be packed; convert them to plain tensors")
