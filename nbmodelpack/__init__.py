"""nbmodelpack: train, compress, encrypt, sign, publish and serve PyTorch models from Jupyter.

Importing this package is cheap and never imports torch: the public functions
are loaded on first use.

Example:
    >>> import nbmodelpack
    >>> info = nbmodelpack.pack(model, "mnist-mlp", example=x[:1])  # doctest: +SKIP
    >>> model2 = nbmodelpack.load("mnist-mlp:latest")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> module that defines it
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
    "get_store": "store",
    "encrypt": "crypto",
    "decrypt": "crypto",
    "keygen_age": "crypto",
    "Passphrase": "crypto",
    "sign": "signing",
    "verify": "signing",
    "keygen_signing": "signing",
    "export_files": "signing",
    "enforce_trust_policy": "signing",
    "VerifyResult": "signing",
    "Store": "store",
    "BundleInfo": "bundle.info",
    "errors": "errors",
    "publish": "remote",
    "pull": "remote",
    "login": "remote",
    "list_remote": "remote",
    "remote": "remote",
    "serve": "serving",
    "servers": "serving",
    "stop_server": "serving",
    "containerize": "serving.containerize",
    "compress": "compression",
    "CompressionReport": "compression",
    "compression": "compression",
    "fit": "pytorch.fit",
    "track": "notebook.dashboard",
    "History": "notebook.dashboard",
}

if TYPE_CHECKING:
    from . import errors, remote
    from .api import (
        card,
        export,
        fsck,
        gc,
        import_,
        import_pth,
        load,
        ls,
        pack,
        rm,
        show,
        tag,
    )
    from .bundle.info import BundleInfo
    from .compression import CompressionReport, compress
    from .notebook.dashboard import History, track  # noqa: F401
    from .pytorch.fit import fit  # noqa: F401
    from .remote import list_remote, login, publish, pull
    from .serving import serve, servers, stop_server
    from .serving.containerize import containerize
    from .store import Store, get_store


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbmodelpack' has no attribute {name!r}")
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if name == module else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbmodelpack``: register the ``%modelpack`` magic."""
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)


__all__ = sorted(_LAZY)
