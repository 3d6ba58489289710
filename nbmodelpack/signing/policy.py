"""The trust policy: ``[trust]`` in config.toml (require a signature, by which keys).

Example:
    >>> trusted_keys()  # doctest: +SKIP
    ['/home/me/team-signing.pem.pub']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import paths
from ..config import load_config
from ..errors import UsageError


def trust_policy() -> dict[str, Any]:
    """The ``[trust]`` table of config.toml (empty when none)."""
    trust = load_config().get("trust", {})
    if not isinstance(trust, dict):
        raise UsageError("[trust] in config.toml is not a table")
    return trust


def trusted_keys() -> list[str]:
    """Public keys (paths or PEM text) the trust policy lists; relative paths are under ``$NBMODELPACK_HOME``."""
    keys = trust_policy().get("keys", [])
    if isinstance(keys, str):
        keys = [keys]
    out = []
    for k in map(str, keys):
        if "-----BEGIN" not in k and not Path(k).expanduser().is_absolute():
            k = str(paths.home() / k)
        out.append(k)
    return out
