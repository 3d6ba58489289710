"""``$NBMODELPACK_HOME/config.toml``: named remotes and the trust policy.

    [remotes.team]
    url = "oci://127.0.0.1:5000/team"
    insecure = true

    [trust]
    require_signature = true
    keys = ["~/.config/team-signing.pub"]
    modules = ["timm", "mylab.models"]   # classes load may import besides torch, torchvision

    [pack]
    shard_size = "2GiB"                  # weights above this are written as several shards

Read with :mod:`tomllib`, written with ``tomli_w`` atomically under a lock.
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterator
from typing import Any

import tomli_w
from filelock import FileLock

from . import paths
from ._files import atomic_write
from .errors import UsageError


def load_config() -> dict[str, Any]:
    """The parsed config (empty when there is no file).

    Example:
        >>> load_config().get("remotes", {})  # doctest: +SKIP
        {}
    """
    path = paths.config_file()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}", hint="fix or delete the file") from exc


@contextlib.contextmanager
def edit_config() -> Iterator[dict[str, Any]]:
    """Read-modify-write the config under a lock; written back atomically on success.

    Example:
        >>> with edit_config() as cfg:  # doctest: +SKIP
        ...     cfg.setdefault("trust", {})["require_signature"] = True
    """
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=30):
        doc = load_config()
        yield doc
        atomic_write(path, tomli_w.dumps(doc).encode())


def remotes_table() -> dict[str, dict[str, Any]]:
    """``[remotes.NAME]`` entries that have a ``url`` (a malformed table is a one-line error).

    Example:
        >>> remotes_table()  # doctest: +SKIP
        {'team': {'url': 'oci://127.0.0.1:5000/team', 'insecure': True}}
    """
    table = load_config().get("remotes", {})
    if not isinstance(table, dict):
        raise UsageError(f"{paths.config_file()}: [remotes] is not a table", hint="fix or delete the file")
    return {str(n): v for n, v in sorted(table.items()) if isinstance(v, dict) and v.get("url")}


def trusted_modules() -> list[str]:
    """``[trust] modules``: modules whose classes ``load`` may import besides torch and torchvision.

    Example:
        >>> trusted_modules()  # doctest: +SKIP
        ['timm', 'mylab.models']
    """
    trust = load_config().get("trust", {})
    modules = trust.get("modules", []) if isinstance(trust, dict) else None
    if not isinstance(modules, list) or not all(isinstance(m, str) and m.strip(".") == m and m for m in modules):
        raise UsageError(f"{paths.config_file()}: [trust] modules is not a list of module names", hint='e.g. modules = ["timm", "mylab.models"]')
    return list(modules)


def pack_options() -> dict[str, Any]:
    """``[pack]``: defaults for ``pack``, e.g. ``shard_size = "2GiB"`` (weights above it are sharded).

    Example:
        >>> pack_options()  # doctest: +SKIP
        {'shard_size': '2GiB'}
    """
    table = load_config().get("pack", {})
    if not isinstance(table, dict):
        raise UsageError(f"{paths.config_file()}: [pack] is not a table", hint='e.g. [pack] shard_size = "2GiB"')
    return dict(table)
