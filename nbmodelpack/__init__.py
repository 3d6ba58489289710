"""nbmodelpack: train, compress, encrypt, sign, publish and serve PyTorch models from Jupyter.

The public API, in the manner of ``huggingface_hub``: the verbs (``pack``,
``load``, ``compress``, ``encrypt``, ``sign``, ``publish``, ``pull``, ``serve``,
…), ``BundleInfo`` and the result types, and the errors (every one a
:class:`ModelPackError` whose ``str()`` is one line). Everything is defined in
:mod:`nbmodelpack.api` except the doors' own verbs (``serve``/``servers``/
``stop_server``/``containerize``).
``Store`` and ``get_store`` are the advanced API: a store at another path
(``get_store("/data/models")``) can be passed to any verb as ``store=``.

Importing this package is cheap and never imports torch: the verbs are loaded
on first use. Imported inside IPython, it registers the HTML of its results
(the bundle card and table) with IPython's display formatter.

Example:
    >>> import nbmodelpack
    >>> info = nbmodelpack.pack(model, "mnist-mlp", example=x[:1])  # doctest: +SKIP
    >>> model2 = nbmodelpack.load("mnist-mlp:latest")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import (
    ArchitectureError,
    AuthError,
    BundleFormatError,
    BundleNotFound,
    CompressionError,
    CryptoError,
    IntegrityError,
    InvalidReference,
    ModelPackError,
    RemoteError,
    RemoteUnavailable,
    ServingError,
    SignatureError,
    StoreError,
    UnsafeFileError,
    UsageError,
)
from .version import __version__

# public name -> module that defines it (relative to this package), imported on first use
_LAZY: dict[str, str] = {
    "pack": "api",
    "load": "api",
    "ls": "api",
    "show": "api",
    "card": "api",
    "tag": "api",
    "rm": "api",
    "gc": "api",
    "fsck": "api",
    "import_pth": "api",
    "export": "api",
    "import_": "api",
    "compress": "api",
    "compare": "api",
    "encrypt": "api",
    "decrypt": "api",
    "recipient_of": "api",
    "keygen_age": "api",
    "sign": "api",
    "verify": "api",
    "keygen_signing": "api",
    "export_files": "api",
    "enforce_trust_policy": "api",
    "publish": "api",
    "pull": "api",
    "login": "api",
    "list_remote": "api",
    "list_remotes": "api",
    "add_remote": "api",
    "remove_remote": "api",
    "fit": "api",
    "finetune": "api",
    "get_store": "api",
    "Store": "api",
    "BundleInfo": "api",
    "Passphrase": "api",
    "VerifyResult": "api",
    "CompressionReport": "api",
    "Comparison": "api",
    "PublishResult": "api",
    "Remote": "api",
    "serve": "serving",
    "servers": "serving",
    "stop_server": "serving",
    "containerize": "serving.containerize",
    "track": "api",
    "History": "api",
}

if TYPE_CHECKING:
    from .api import (
        BundleInfo,
        Comparison,
        CompressionReport,
        History,
        Passphrase,
        PublishResult,
        Remote,
        Store,
        VerifyResult,
        add_remote,
        card,
        compare,
        compress,
        decrypt,
        encrypt,
        enforce_trust_policy,
        export,
        export_files,
        finetune,
        fit,
        fsck,
        gc,
        get_store,
        import_,
        import_pth,
        keygen_age,
        keygen_signing,
        list_remote,
        list_remotes,
        load,
        login,
        ls,
        pack,
        publish,
        pull,
        recipient_of,
        remove_remote,
        rm,
        show,
        sign,
        tag,
        track,
        verify,
    )
    from .serving import serve, servers, stop_server
    from .serving.containerize import containerize


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbmodelpack' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbmodelpack``: register the ``%modelpack`` magic and the HTML of results."""
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)


def _register_html_in_ipython() -> None:
    """Inside a running IPython, show results as HTML without ``%load_ext`` (cheap elsewhere)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        from .notebook.formatters import register

        register(shell)


_register_html_in_ipython()

__all__ = [
    "ArchitectureError",
    "AuthError",
    "BundleFormatError",
    "BundleInfo",
    "BundleNotFound",
    "Comparison",
    "CompressionError",
    "CompressionReport",
    "CryptoError",
    "History",
    "IntegrityError",
    "InvalidReference",
    "ModelPackError",
    "Passphrase",
    "PublishResult",
    "Remote",
    "RemoteError",
    "RemoteUnavailable",
    "ServingError",
    "SignatureError",
    "Store",
    "StoreError",
    "UnsafeFileError",
    "UsageError",
    "VerifyResult",
    "__version__",
    "add_remote",
    "card",
    "compare",
    "compress",
    "containerize",
    "decrypt",
    "encrypt",
    "enforce_trust_policy",
    "errors",
    "export",
    "export_files",
    "finetune",
    "fit",
    "fsck",
    "gc",
    "get_store",
    "import_",
    "import_pth",
    "keygen_age",
    "keygen_signing",
    "list_remote",
    "list_remotes",
    "load",
    "load_ipython_extension",
    "login",
    "ls",
    "pack",
    "publish",
    "pull",
    "recipient_of",
    "remove_remote",
    "rm",
    "serve",
    "servers",
    "show",
    "sign",
    "stop_server",
    "tag",
    "track",
    "verify",
]
