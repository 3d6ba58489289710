"""Where nbmodelpack keeps things: ``$NBMODELPACK_HOME`` (default ``~/.local/share/nbmodelpack``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The nbmodelpack home directory (store, config.toml, keys).

    Example:
        >>> import os; os.environ["NBMODELPACK_HOME"] = "/tmp/mp"; str(home())
        '/tmp/mp'
    """
    env = os.environ.get("NBMODELPACK_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nbmodelpack"


def store_dir() -> Path:
    """The local store: an OCI image layout directory (``$NBMODELPACK_STORE``, else ``store`` under home).

    Example:
        >>> import os; os.environ["NBMODELPACK_STORE"] = "/mnt/models/store"; str(store_dir())
        '/mnt/models/store'
        >>> del os.environ["NBMODELPACK_STORE"]
    """
    env = os.environ.get("NBMODELPACK_STORE")
    return Path(env).expanduser() if env else home() / "store"


def config_file() -> Path:
    """``config.toml``: remotes, trust policy."""
    return home() / "config.toml"


def keys_dir() -> Path:
    """Default place for age identities and signing keys."""
    return home() / "keys"
