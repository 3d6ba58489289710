"""Serving: an Open Inference Protocol v2 server for one bundle (container contexts: :mod:`.containerize`).

``servers`` and ``stop_server`` need only the standard library; ``serve`` needs
the ``serve`` extra (starlette, uvicorn) and torch.

Example:
    >>> srv = nbmodelpack.serve("mnist-mlp:latest")  # doctest: +SKIP
    >>> srv.url  # doctest: +SKIP
    'http://127.0.0.1:41234'
    >>> srv.stop()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .handle import Server
    from .registry import ServerEntry


def serve(
    ref: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int = 1,
    token: str | None = None,
    max_batch: int = 32,
    max_delay_ms: float = 2.0,
    identity: Any = None,
    max_body: int = 8 * 1024 * 1024,
    threads: int = 0,
    background: bool = True,
    timeout: float = 120.0,
    trust_code: bool = False,
    verify: bool = False,
) -> Server | None:
    """Serve a bundle over HTTP (v2 protocol + ``/predict``); ``port=0`` picks a free port.

    ``identity`` opens an encrypted bundle: an identity file, an ``AGE-SECRET-KEY-…``
    string or ``nbmodelpack.Passphrase(...)``; ``trust_code`` runs class source stored
    in the bundle, as for :func:`nbmodelpack.load`; so does ``verify`` (re-hash the
    weights even if the store recorded them as intact).

    In the background (default) it returns a :class:`Server` once the server is
    ready; it stops with :meth:`Server.stop` or when this process exits. With
    ``background=False`` it serves in this process until Ctrl-C.

    Example:
        >>> srv = nbmodelpack.serve("mnist-mlp:latest", workers=2)  # doctest: +SKIP
    """
    from ..crypto.keys import Passphrase
    from .handle import Server
    from .options import ServeOptions
    from .runner import serve as run_foreground
    from .runner import start

    secret = identity.reveal() if isinstance(identity, Passphrase) else None
    options = ServeOptions(
        ref=ref, host=host, port=port, workers=workers, token=token, max_batch=max_batch, max_delay_ms=max_delay_ms,
        identity=None if secret else identity, passphrase=secret, max_body=max_body, threads=threads, trust_code=trust_code,
        verify=verify,
    )
    if not background:
        run_foreground(options)
        return None
    return Server(start(options, timeout=timeout), token=token)


def servers() -> list[ServerEntry]:
    """Running servers, from any process (``%modelpack servers``).

    Example:
        >>> [s.url for s in nbmodelpack.servers()]  # doctest: +SKIP
    """
    from .registry import servers as listed

    return listed()


def stop_server(which: str = "all") -> list[ServerEntry]:
    """Stop servers by ref, name, pid, URL, or ``"all"``.

    Example:
        >>> nbmodelpack.stop_server("mnist-mlp:latest")  # doctest: +SKIP
    """
    from .registry import stop

    return stop(which)


__all__ = ["serve", "servers", "stop_server"]
