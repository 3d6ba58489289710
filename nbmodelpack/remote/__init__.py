"""Remotes: OCI registries and OCI layout directories; publish, pull and list.

Remotes are named in ``$NBMODELPACK_HOME/config.toml`` (:mod:`.config`).
``REMOTE/NAME:TAG`` names bundle ``NAME`` in repository ``NAMESPACE/NAME`` of
that registry (or in the layout directory); ``HOST[:PORT]/REPO:TAG`` names a
registry directly. Publish, pull and list (:mod:`.sync`, :mod:`.listing`) are
written once over the :class:`~.transport.Transport` protocol, which a layout
directory (:mod:`.layout`), a registry (:mod:`.registry_transport`) and a set of
dicts for tests (:mod:`.memory`) implement.

Example:
    >>> from nbmodelpack import remote
    >>> remote.add_remote("team", "oci://127.0.0.1:5000/team", insecure=True)  # doctest: +SKIP
    >>> remote.publish("mnist-mlp:1", "team").tags  # doctest: +SKIP
    ['1', 'latest']
"""

from __future__ import annotations

from .config import Remote, RemoteList, add_remote, get_remote, list_remotes, remove_remote
from .connect import login, open_transport, registry_client
from .credentials import docker_config_path
from .listing import list_remote
from .sync import PublishResult, publish, publish_to, pull, pull_from, register_pull_check
from .transport import Transport

__all__ = [
    "PublishResult",
    "Remote",
    "RemoteList",
    "Transport",
    "add_remote",
    "docker_config_path",
    "get_remote",
    "list_remote",
    "list_remotes",
    "login",
    "open_transport",
    "publish",
    "publish_to",
    "pull",
    "pull_from",
    "register_pull_check",
    "registry_client",
    "remove_remote",
]
