"""Registry credentials in the Docker/ORAS convention: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.

``$DOCKER_AUTH_CONFIG``, when set, holds that file's content instead (read only).

We read what ``docker login``, ``oras login``, ``skopeo login --authfile`` and
``podman`` write: ``auths[HOST].auth`` (base64 ``user:password``),
``identitytoken``/``registrytoken``, and credential helpers
(``credHelpers[HOST]`` / ``credsStore``, run as ``docker-credential-NAME get``).
``login`` writes ``auths[HOST].auth`` into the same file (mode 0600). No Python
library does only this (the docker SDK pulls a daemon client), so it is a few
lines here.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._files import atomic_write
from ..errors import UsageError


@dataclass(frozen=True)
class Credentials:
    """A username and password, or a bearer token given as-is (``registrytoken``)."""

    username: str = ""
    password: str = ""
    token: str = ""

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r}, password={'***' if self.password else ''!r}, token={'***' if self.token else ''!r})"


def docker_config_path() -> Path:
    """Where the credential file is: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.

    Example:
        >>> docker_config_path().name
        'config.json'
    """
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base).expanduser() if base else Path.home() / ".docker") / "config.json"


# The config file's content in a variable (GitLab's convention; a Kubernetes
# docker-registry Secret's ``.dockerconfigjson`` arrives this way in a pod).
AUTH_CONFIG_ENV = "DOCKER_AUTH_CONFIG"


def _read_config() -> dict[str, Any]:
    inline = os.environ.get(AUTH_CONFIG_ENV)
    if inline:
        try:
            doc = json.loads(inline)
        except json.JSONDecodeError as exc:
            raise UsageError(f"${AUTH_CONFIG_ENV} is not valid JSON", hint="set it to the content of a docker config.json") from exc
        return doc if isinstance(doc, dict) else {}
    path = docker_config_path()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON", hint="fix or move the file, then log in again") from exc
    return doc if isinstance(doc, dict) else {}


def _host_key(key: str) -> str:
    # Docker writes some keys as URLs ("https://host/v1/"); compare by host[:port].
    key = key.split("://", 1)[-1]
    return key.split("/", 1)[0]


def _from_helper(helper: str, host: str) -> Credentials | None:
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "get"], input=host, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        doc = json.loads(out.stdout)
    except json.JSONDecodeError:
        return None
    user, secret = str(doc.get("Username", "")), str(doc.get("Secret", ""))
    if user == "<token>":
        return Credentials(token=secret)
    return Credentials(user, secret) if secret else None


def read_credentials(host: str) -> Credentials | None:
    """Credentials for ``host`` (``HOST[:PORT]``) from the Docker/ORAS config, or None.

    Example:
        >>> read_credentials("registry.invalid:5000") is None  # doctest: +SKIP
        True
    """
    doc = _read_config()
    helpers = doc.get("credHelpers") or {}
    helper = helpers.get(host) or doc.get("credsStore")
    if isinstance(helper, str) and helper:
        found = _from_helper(helper, host)
        if found is not None:
            return found
    for key, entry in (doc.get("auths") or {}).items():
        if _host_key(str(key)) != host or not isinstance(entry, dict):
            continue
        if entry.get("registrytoken"):
            return Credentials(token=str(entry["registrytoken"]))
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise UsageError(f"the saved login for {host} in {docker_config_path()} is damaged", hint="log in again") from exc
            return Credentials(user, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
        if entry.get("identitytoken"):
            return Credentials(token=str(entry["identitytoken"]))
    return None


def save_credentials(host: str, creds: Credentials) -> Path:
    """Write ``auths[host]`` into the credential file (atomically, mode 0600); keep every other key.

    Example:
        >>> save_credentials("127.0.0.1:5000", Credentials("alice", "pw"))  # doctest: +SKIP
        PosixPath('/root/.docker/config.json')
    """
    path = docker_config_path()
    doc = _read_config()
    auths = doc.setdefault("auths", {})
    for key in [k for k in auths if _host_key(str(k)) == host]:
        del auths[key]
    if creds.token:
        auths[host] = {"registrytoken": creds.token}
    else:
        auths[host] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, indent="\t").encode(), mode=0o600)
    return path


def remove_credentials(host: str) -> bool:
    """Forget the saved login for ``host``; True if there was one.

    Example:
        >>> remove_credentials("127.0.0.1:5000")  # doctest: +SKIP
        True
    """
    path = docker_config_path()
    doc = _read_config()
    auths = doc.get("auths") or {}
    keys = [k for k in auths if _host_key(str(k)) == host]
    if not keys:
        return False
    for key in keys:
        del auths[key]
    atomic_write(path, json.dumps(doc, indent="\t").encode(), mode=0o600)
    return True
