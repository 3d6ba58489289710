"""How to serve one bundle: the ``modelpack serve`` flags, their checks, and how they reach workers.

Standard library only, so a door can check options (and the registry can be
read) on a machine without the ``serve`` extra.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass

from ..bundle.architecture import check_int8_kernel
from ..crypto.keys import PASSPHRASE_ENV, Passphrase
from ..errors import ServingError, UsageError

_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
OPTIONS_ENV = "NBMODELPACK_SERVE_OPTIONS"
TOKEN_ENV = "NBMODELPACK_SERVE_TOKEN"
IDENTITY_ENV = "NBMODELPACK_SERVE_IDENTITY"
ENGINES = ("modelpack", "ray")
RAY_NOT_INSTALLED = "ray is not installed; pip install 'nbmodelpack[ray]'"
SECRETS = ("token", "identity", "passphrase")  # never in OPTIONS_ENV (it may be logged) nor on a command line


@dataclass
class ServeOptions:
    """How to serve one bundle (``modelpack serve`` flags).

    Example:
        >>> ServeOptions(ref="mnist-mlp:1", port=0).host
        '127.0.0.1'
    """

    ref: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    token: str | None = None
    max_batch: int = 32
    max_delay_ms: float = 2.0
    identity: str | None = None
    max_body: int = 8 * 1024 * 1024
    threads: int = 0  # torch threads per worker; 0 = cores / workers
    trust_code: bool = False  # run class source stored in the bundle (as load's trust_code)
    passphrase: str | None = None  # for a passphrase-encrypted bundle (instead of identity)
    int8_kernel: str | None = None  # as load's int8_kernel: None (the bundle's recipe, else weight-only), weight-only, dynamic
    engine: str = "modelpack"  # or "ray": a Ray Serve application (nbmodelpack.serving.ray)
    replicas: int = 1  # Ray Serve replicas (fixed count, without autoscaling)
    min_replicas: int | None = None  # Ray Serve autoscaling, on when max_replicas is set
    max_replicas: int | None = None
    target_ongoing: float = 2.0  # Ray Serve autoscaling: ongoing requests per replica to aim for
    ray_address: str | None = None  # an existing Ray cluster (None: RAY_ADDRESS, else a local head node)
    verify: bool = False  # re-hash the weights (and re-check the signature) even if recorded as intact
    model_name: str | None = None  # the name in /v2/models/NAME (default: the bundle's name)

    def key(self) -> str | Passphrase | None:
        """What opens the bundle's encrypted layers: the passphrase, else the identity (``None``: the defaults).

        Example:
            >>> ServeOptions(ref="m:1", passphrase="s3cret").key()
            Passphrase(***)
        """
        return Passphrase(self.passphrase) if self.passphrase else self.identity

    def to_env(self) -> dict[str, str]:
        """Environment for worker processes; the token, identity and passphrase travel in their own variables."""
        doc = asdict(self)
        env = {OPTIONS_ENV: json.dumps({k: v for k, v in doc.items() if k not in SECRETS})}
        if self.token:
            env[TOKEN_ENV] = self.token
        if self.identity:
            env[IDENTITY_ENV] = self.identity
        if self.passphrase:
            env[PASSPHRASE_ENV] = self.passphrase
        return env

    @classmethod
    def from_env(cls) -> ServeOptions:
        """The options a worker process was started with."""
        raw = os.environ.get(OPTIONS_ENV)
        if not raw:
            raise ServingError(f"{OPTIONS_ENV} is not set", hint="start the server with `modelpack serve REF`")
        return cls(
            **json.loads(raw), token=os.environ.get(TOKEN_ENV) or None, identity=os.environ.get(IDENTITY_ENV) or None,
            passphrase=os.environ.get(PASSPHRASE_ENV) or None,
        )


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1`` and ``localhost`` are loopback; anything else is not.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
        (True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate(options: ServeOptions) -> None:
    """Refuse unsafe or impossible options (no bundle is read).

    Example:
        >>> validate(ServeOptions(ref="m:1", host="0.0.0.0"))
        Traceback (most recent call last):
        nbmodelpack.errors.ServingError: serve: refusing to listen on 0.0.0.0 without a token (pass token=TOKEN (or set NBMODELPACK_SERVE_TOKEN), or keep the default host="127.0.0.1")
    """
    if not is_loopback(options.host) and not options.token:
        raise ServingError(
            f"refusing to listen on {options.host} without a token",
            hint='pass token=TOKEN (or set NBMODELPACK_SERVE_TOKEN), or keep the default host="127.0.0.1"',
        )
    if options.workers < 1 or options.max_batch < 1 or options.max_delay_ms < 0 or options.max_body < 1024:
        raise UsageError("workers= and max_batch= must be ≥ 1, max_delay_ms= ≥ 0, max_body= ≥ 1024")
    if options.model_name is not None and not _MODEL_NAME.fullmatch(options.model_name):
        raise UsageError(f"model_name={options.model_name[:40]!r} is not a model name", hint="use lowercase letters, digits, '.', '_' and '-' (at most 63)")
    if not 0 <= options.port <= 65535:
        raise UsageError(f"port={options.port} is not a port number")
    check_int8_kernel(options.int8_kernel)
    if options.engine not in ENGINES:
        raise UsageError(f"engine={options.engine[:20]!r} is not one of: {', '.join(ENGINES)}")
    if options.engine == "ray":
        if importlib.util.find_spec("ray") is None:  # said before any bundle is read or process started
            raise UsageError(RAY_NOT_INSTALLED)
        low, high = options.min_replicas, options.max_replicas
        if options.replicas < 1 or (low is not None and low < 0) or (high is not None and high < max(1, low or 0)) or options.target_ongoing <= 0:
            raise UsageError("replicas= must be ≥ 1, max_replicas= ≥ max(1, min_replicas= ≥ 0), target_ongoing= > 0")
        if low is not None and high is None:
            raise UsageError("min_replicas= needs max_replicas= (autoscaling is on when max_replicas= is given)")


__all__ = ["ENGINES", "IDENTITY_ENV", "OPTIONS_ENV", "PASSPHRASE_ENV", "RAY_NOT_INSTALLED", "SECRETS", "TOKEN_ENV", "ServeOptions", "is_loopback", "validate"]
