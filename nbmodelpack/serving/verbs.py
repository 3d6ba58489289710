"""The serving door's verbs: ``serve``, ``servers``, ``stop``, ``containerize``.

Serving is a door (above the verbs), so it adds its verbs to the shared
registry itself; the CLI and ``%modelpack`` import this module. The server
modules are imported inside each verb, so the ``serve`` extra is needed only
when serving is asked for.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..commands import Context, ServerList, Text, arg, verb
from ..commands.secrets import IDENTITY_ARGS


@verb(
    "serve",
    "serve a bundle over HTTP (Open Inference Protocol v2 + /predict)",
    arg("ref"),
    arg("--host", default="127.0.0.1", help="address to listen on (non-loopback needs --token)"),
    arg("--port", type=int, default=None, help="port (default 8000 in a terminal, any free one in a notebook; 0 = any free)"),
    arg("--workers", type=int, default=1, help="worker processes, each with its own copy of the model"),
    arg("--token", help="bearer token clients must send (or set NBMODELPACK_SERVE_TOKEN)"),
    arg("--max-batch", type=int, default=32, help="most rows per model call"),
    arg("--max-delay-ms", type=float, default=2.0, help="how long a request waits for others to batch with"),
    *IDENTITY_ARGS,
    arg("--trust-code", action="store_true", help="allow running class source stored in the bundle (as load --trust-code)"),
    arg("--max-body", type=int, default=8 * 1024 * 1024, help="largest request body in bytes"),
    arg("--threads", type=int, default=0, help="torch threads per worker (default: cores / workers)"),
    arg("--verify", action="store_true", help="re-hash every weight file, even those the store recorded as intact"),
    arg("--model-name", help="the name clients use in /v2/models/NAME (default: the bundle's name)"),
)
def serve_verb(args: argparse.Namespace, ctx: Context) -> Any:
    from ..commands.secrets import identity_of
    from .options import IDENTITY_ENV, TOKEN_ENV, ServeOptions
    from .runner import serve, start

    port = args.port if args.port is not None else (0 if ctx.interactive else 8000)
    key = identity_of(args, ctx)
    options = ServeOptions(
        ref=args.ref, host=args.host, port=port, workers=args.workers, token=args.token or os.environ.get(TOKEN_ENV) or None,
        max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, max_body=args.max_body, threads=args.threads,
        identity=key if isinstance(key, str) else os.environ.get(IDENTITY_ENV) or None,
        passphrase=key.reveal() if key is not None and not isinstance(key, str) else None, trust_code=args.trust_code,
        verify=args.verify,
        model_name=args.model_name,
    )
    if ctx.interactive:
        from .handle import Server

        return Server(start(options), token=options.token)
    serve(options)
    return Text("server stopped")


@verb("servers", "list running model servers", arg("--json", action="store_true"))
def servers_verb(args: argparse.Namespace, ctx: Context) -> ServerList:
    from .runner import servers

    return ServerList(servers())


@verb("stop", "stop a running model server", arg("which", help="bundle ref or name, pid, URL, or `all`"))
def stop_verb(args: argparse.Namespace, ctx: Context) -> Text:
    from .runner import servers, stop

    if args.which == "all" and not servers():
        return Text("no servers running")
    stopped = stop(args.which)
    return Text("stopped " + ", ".join(f"{s.ref} ({s.url})" for s in stopped))


@verb(
    "containerize",
    "write a Docker build context and a KServe InferenceService for a bundle",
    arg("ref", help="a local bundle; with --kserve, a published one (REMOTE/NAME:TAG, or a local ref you published)"),
    arg("dir"),
    arg("--port", type=int, default=8080, help="port inside the container"),
    arg("--image", help="image name for the KServe manifest (default modelpack-NAME:VERSION; with --kserve modelpack-runtime:VERSION)"),
    arg("--workers", type=int, default=2),
    arg("--kserve", action="store_true", help="one runtime image for every bundle: KServe pulls this one from its registry by digest"),
)
def containerize_verb(args: argparse.Namespace, ctx: Context) -> Text:
    from .containerize import containerize, kserve_context

    if args.kserve:
        out = kserve_context(args.ref, args.dir, port=args.port, image=args.image)
        return Text(f"wrote {out}/kserve.yaml and the runtime image context {out}/Dockerfile; see the kubectl commands at the top of kserve.yaml")
    out = containerize(args.ref, args.dir, port=args.port, image=args.image, workers=args.workers)
    return Text(f"wrote {out}/Dockerfile and {out}/kserve.yaml; build with: docker build -t IMAGE {out}")


@verb(
    "storage-init",
    "pull a bundle for KServe into DIR (the storage initializer of `containerize --kserve`)",
    arg("uri", help="modelpack://HOST/REPO@sha256:DIGEST"),
    arg("dir", help="where the pod mounts the model (KServe passes /mnt/models)"),
)
def storage_init_verb(args: argparse.Namespace, ctx: Context) -> Text:
    from .kserve import storage_init

    return Text(f"pulled {args.uri} into {args.dir} as {storage_init(args.uri, args.dir)}")
