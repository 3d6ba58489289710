"""From a configured remote to its transport; ``login``.

Example:
    >>> open_transport(Remote("share", "file:///tmp/share")).where("x")
    '/tmp/share'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError
from .config import Remote, get_remote
from .credentials import Credentials, read_credentials, save_credentials
from .layout import LayoutTransport
from .transport import Transport

if TYPE_CHECKING:
    from .registry import RegistryClient

# The registry client needs `requests` (the `remote` extra); it is imported only when a
# registry is used, so listings and file:// remotes work without it.


def registry_client(remote: Remote) -> RegistryClient:
    """An HTTP client of a registry remote, with the saved login for its host.

    Example:
        >>> registry_client(get_remote("team")).host  # doctest: +SKIP
        '127.0.0.1:5000'
    """
    from .registry import RegistryClient

    return RegistryClient(remote.host, insecure=remote.insecure, credentials=read_credentials(remote.host), remote_name=remote.name)


def open_transport(remote: Remote) -> Transport:
    """The transport of a remote: an OCI layout directory for ``file://``, else a registry.

    Example:
        >>> open_transport(get_remote("team")).where("team/mnist-mlp")  # doctest: +SKIP
        '127.0.0.1:5000/team/mnist-mlp'
    """
    if remote.kind == "file":
        return LayoutTransport(remote.name, remote.path)
    from .registry_transport import RegistryTransport

    return RegistryTransport(registry_client(remote))


def login(remote: str, username: str | None = None, password: str | None = None, *, token: str | None = None) -> str:
    """Check credentials against a registry, then save them in the Docker/ORAS credential file.

    Nothing is saved when the registry refuses them. Returns a one-line message.

    Example:
        >>> login("team", "alice", getpass.getpass())  # doctest: +SKIP
        'logged in to 127.0.0.1:5000 as alice (saved in ~/.docker/config.json)'
    """
    r = get_remote(remote)
    if r.kind == "file":
        raise UsageError(f"{r.name} is a directory remote; it needs no login")
    if token:
        creds = Credentials(token=token)
    elif username and password:
        creds = Credentials(username, password)
    else:
        raise UsageError("give a username and password, or a token")
    from .registry import RegistryClient

    RegistryClient(r.host, insecure=r.insecure, credentials=creds, remote_name=r.name).ping()
    path = save_credentials(r.host, creds)
    who = f" as {username}" if username and not token else " with a token"
    return f"logged in to {r.host}{who} (saved in {path})"
