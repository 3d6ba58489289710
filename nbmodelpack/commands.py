"""The verbs: one parser and one dispatcher shared by the CLI and ``%modelpack``.

A verb is one function here, registered with :func:`verb`. It receives the
parsed arguments and a :class:`Context` (what the front door can do: look up
notebook variables, ask for a secret) and returns a result object; the front
door renders it (text or JSON in a terminal, HTML in a notebook).
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from . import api
from .bundle.info import BundleInfo, human_bytes
from .errors import ModelPackError, UsageError


class Context:
    """What a front door offers verbs. The terminal has no variables to look up."""

    interactive = False
    name = "modelpack"

    def lookup(self, name: str) -> Any:
        raise UsageError(f"{name!r} names a notebook variable; this verb needs %modelpack in a notebook")

    def bind(self, name: str, value: Any) -> None:
        raise UsageError("binding a variable needs %modelpack in a notebook")

    def getpass(self, prompt: str) -> str:
        import getpass

        return getpass.getpass(prompt)


# ---- results -------------------------------------------------------------------------------
class Text(str):
    """A plain message result."""


class BundleList(list[BundleInfo]):
    """A table of bundle versions (``ls``)."""

    def __str__(self) -> str:
        if not self:
            return "no bundles (pack one with nbmodelpack.pack or %modelpack pack)"
        rows = [("REF", "TAGS", "SIZE", "PARAMS", "PRECISION", "BADGES", "CREATED")]
        for i in self:
            rows.append((i.ref, ",".join(t for t in i.tags if not t.isdigit()) or "-", human_bytes(i.size), f"{i.parameters:,}", i.precision or "-", ",".join(i.badges) or "-", i.created[:19]))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)

    def to_json(self) -> list[dict[str, Any]]:
        return [i.to_json() for i in self]

    def _repr_html_(self) -> str:
        from .notebook.display import bundle_table_html

        return bundle_table_html(self)


@dataclass
class Verb:
    name: str
    help: str
    args: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
    run: Callable[[argparse.Namespace, Context], Any]
    notebook_only: bool = False


VERBS: dict[str, Verb] = {}


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """An argparse argument spec for :func:`verb`."""
    return flags, kwargs


def verb(name: str, help: str, *args: tuple[tuple[str, ...], dict[str, Any]], notebook_only: bool = False) -> Callable[[Callable[[argparse.Namespace, Context], Any]], Callable[[argparse.Namespace, Context], Any]]:
    """Register a verb: ``@verb("tag", "add or move a tag", arg("ref"), arg("new_tag"))``."""

    def register(fn: Callable[[argparse.Namespace, Context], Any]) -> Callable[[argparse.Namespace, Context], Any]:
        VERBS[name] = Verb(name, help, args, fn, notebook_only)
        return fn

    return register


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (with the usage line) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _HelpShown(message or "")


class _HelpShown(Exception):
    """argparse printed help (``-h``); not an error."""


@dataclass
class Help:
    """Usage text (``help``, ``-h``)."""

    text: str = field(default="")

    def __str__(self) -> str:
        return self.text


def build_parser(prog: str = "modelpack") -> argparse.ArgumentParser:
    """The parser of every verb."""
    parser = _Parser(prog=prog, description="Pack, load, compress, encrypt, sign, publish and serve PyTorch models as OCI bundles.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for v in VERBS.values():
        p = sub.add_parser(v.name, help=v.help, description=v.help)
        for flags, kwargs in v.args:
            p.add_argument(*flags, **kwargs)
    return parser


def run(argv: Sequence[str] | str, ctx: Context | None = None) -> Any:
    """Parse ``argv`` and run the verb; return its result (raise :class:`ModelPackError` on failure).

    Example:
        >>> str(run("help tag")).splitlines()[0]
        'usage: modelpack tag [-h] ref new_tag'
    """
    ctx = ctx or Context()
    args_list = shlex.split(argv) if isinstance(argv, str) else list(argv)
    parser = build_parser(ctx.name)
    if not args_list:
        return Help(parser.format_help())
    if args_list[0] not in VERBS and not args_list[0].startswith("-"):
        known = ", ".join(sorted(VERBS))
        raise UsageError(f"unknown verb {args_list[0]!r}", hint=f"verbs: {known}")
    try:
        ns = parser.parse_args(args_list)
    except _HelpShown:
        sub = _subparser(parser, args_list[0])
        return Help((sub or parser).format_help())
    if ns.verb is None:
        return Help(parser.format_help())
    v = VERBS[ns.verb]
    if v.notebook_only and not ctx.interactive:
        raise UsageError(f"`{v.name}` works on notebook variables", hint="use %modelpack in a notebook, or the Python API")
    try:
        return v.run(ns, ctx)
    except OSError as exc:
        # A path the user named that cannot be read or written (a file where a folder
        # should be, no permission, a full disk): one line, as for every other error.
        where = f": {exc.filename}" if exc.filename else ""
        raise ModelPackError(f"{exc.strerror or exc}{where}", hint="check the path and try again") from exc


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from exc


# ---- foundation verbs ----------------------------------------------------------------------
@verb("help", "show usage of all verbs or one", arg("topic", nargs="?"))
def _help(a: argparse.Namespace, ctx: Context) -> Help:
    parser = build_parser(ctx.name)
    if a.topic:
        sub = _subparser(parser, a.topic)
        if sub is None:
            raise UsageError(f"unknown verb {a.topic!r}", hint=f"verbs: {', '.join(sorted(VERBS))}")
        return Help(sub.format_help())
    return Help(parser.format_help())


@verb("ls", "list local bundle versions (or a remote's with --remote)", arg("name", nargs="?"), arg("--json", action="store_true"), arg("--remote", metavar="REMOTE", help="list what a remote holds (issue 6)"))
def _ls(a: argparse.Namespace, ctx: Context) -> BundleList:
    if a.remote:
        from .remote import list_remote

        return BundleList(i for i in list_remote(a.remote) if a.name is None or i.name == a.name)
    return BundleList(api.ls(a.name))


@verb("show", "show one bundle version", arg("ref"), arg("--json", action="store_true"), arg("--card", action="store_true", help="print the model card"))
def _show(a: argparse.Namespace, ctx: Context) -> Any:
    if a.card:
        return Text(api.card(a.ref))
    return api.show(a.ref)


@verb("tag", "add or move a tag", arg("ref"), arg("new_tag"))
def _tag(a: argparse.Namespace, ctx: Context) -> BundleInfo:
    return api.tag(a.ref, a.new_tag)


@verb("rm", "remove a bundle version (blobs go at the next gc)", arg("ref"))
def _rm(a: argparse.Namespace, ctx: Context) -> Text:
    removed = api.rm(a.ref)
    return Text(f"removed {', '.join(removed)}")


@verb("gc", "delete blobs no bundle references", arg("--grace", type=float, default=3600.0, help="keep blobs younger than this many seconds"))
def _gc(a: argparse.Namespace, ctx: Context) -> Text:
    count, freed = api.gc(grace_seconds=a.grace)
    return Text(f"removed {count} blobs, freed {human_bytes(freed)}")


@dataclass
class FsckReport:
    problems: list[Any]

    def __str__(self) -> str:
        if not self.problems:
            return "ok: every blob matches its digest"
        return "\n".join(f"damaged: {p}" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.problems, "problems": [{"digest": p.digest, "filepath": p.filepath, "problem": p.problem} for p in self.problems]}

    @property
    def ok(self) -> bool:
        return not self.problems


@verb("fsck", "re-hash every blob and report damage", arg("--json", action="store_true"))
def _fsck(a: argparse.Namespace, ctx: Context) -> FsckReport:
    return FsckReport(api.fsck())


@verb(
    "import-pth",
    "import a legacy .pth/.pt state dict (weights_only, never unpickles code)",
    arg("file"),
    arg("--name", required=True),
    arg("--arch", required=True, help="module:Class or module:factory that builds the model"),
    arg("--arch-kwargs", help="JSON object of init arguments"),
)
def _import_pth(a: argparse.Namespace, ctx: Context) -> BundleInfo:
    kwargs = _json_arg(a.arch_kwargs, "--arch-kwargs")
    return api.import_pth(a.file, a.name, arch=a.arch, arch_kwargs=kwargs)


@verb("export", "write a version as an OCI layout (tar file or --dir), or as plain files (--files)", arg("ref"), arg("-o", "--output", help="FILE.tar"), arg("--dir", help="directory"), arg("--files", help="directory to write the bundle's files into, by filepath (as stored)"))
def _export(a: argparse.Namespace, ctx: Context) -> Text:
    if a.files:
        if a.output or a.dir:
            raise UsageError("give exactly one of -o FILE.tar, --dir DIR or --files DIR")
        from .signing import export_files

        return Text(f"exported the files of {a.ref} to {export_files(a.ref, a.files)}")
    if bool(a.output) == bool(a.dir):
        raise UsageError("give exactly one of -o FILE.tar or --dir DIR")
    out = api.export(a.ref, a.output or (a.dir.rstrip("/") + "/"))
    return Text(f"exported {a.ref} to {out}")


@verb("import", "import bundles from an OCI layout (tar or directory)", arg("file"), arg("--name"))
def _import(a: argparse.Namespace, ctx: Context) -> BundleList:
    return BundleList(api.import_(a.file, name=a.name))


# ---- notebook verbs (issue 3) --------------------------------------------------------------
def _module_var(ctx: Context, name: str, verb_name: str) -> Any:
    """The notebook variable ``name``, which must hold a torch.nn.Module."""
    import sys

    value = ctx.lookup(name)
    torch = sys.modules.get("torch")  # a Module instance means torch is already imported
    if torch is None or not isinstance(value, torch.nn.Module):
        raise UsageError(f"{name} is a {type(value).__name__}, not a torch.nn.Module", hint=f"{verb_name} VAR needs a variable holding a model")
    return value


def _metrics_arg(text: str, ctx: Context) -> dict[str, Any] | str:
    if text == "auto":
        return "auto"
    value = _json_arg(text, "--metrics") if text.lstrip().startswith("{") else ctx.lookup(text)
    if not isinstance(value, dict):
        raise UsageError(f"--metrics {text}: expected 'auto', a JSON object or a dict variable, got {type(value).__name__}")
    return value


def default_var_name(ref: str) -> str:
    """The variable ``load`` binds when not told: the bundle name as an identifier.

    Example:
        >>> default_var_name("mnist-mlp:3")
        'mnist_mlp'
    """
    import keyword
    import re

    from .bundle.refs import parse

    name = re.sub(r"\W", "_", parse(ref).name.rsplit("/", 1)[-1])
    if not name or name[0].isdigit():
        name = f"model_{name}"
    return f"{name}_" if keyword.iskeyword(name) else name


@dataclass
class Loaded:
    """What ``load`` bound, shown as the bundle card."""

    var: str
    info: BundleInfo

    def __str__(self) -> str:
        return f"loaded {self.info.ref} as `{self.var}`\n{self.info}"

    def _repr_html_(self) -> str:
        from .notebook.display import bundle_card_html

        return bundle_card_html(self.info, heading=f"loaded into variable {self.var}")


@verb(
    "pack",
    "pack a notebook model as the next version of a bundle",
    arg("var", metavar="VAR", help="variable holding the torch.nn.Module"),
    arg("--name", required=True, help="bundle name, e.g. mnist-mlp"),
    arg("--example", metavar="VAR", help="variable holding an example input (records the I/O signature; lets torch.export capture a notebook class)"),
    arg("--labels", metavar="VAR", help="variable holding the output labels"),
    arg("--preprocess", metavar="VAR", help="variable holding a preprocess dict (see processing.json)"),
    arg("--metrics", default="auto", help="'auto' (from the last nbmodelpack.fit), a JSON object, or a dict variable"),
    arg("--description", help="one line for the card"),
    arg("--tag", action="append", default=[], help="extra tag (repeatable)"),
    arg("--trust-code", action="store_true", help="allow storing the class source as a last resort"),
    notebook_only=True,
)
def _nb_pack(a: argparse.Namespace, ctx: Context) -> BundleInfo:
    model = _module_var(ctx, a.var, "pack")
    example = ctx.lookup(a.example) if a.example else None
    labels = ctx.lookup(a.labels) if a.labels else None
    preprocess = ctx.lookup(a.preprocess) if a.preprocess else None
    if preprocess is not None and not isinstance(preprocess, dict):
        raise UsageError(f"--preprocess {a.preprocess} is a {type(preprocess).__name__}, not a dict")
    if labels is not None and (isinstance(labels, str | bytes) or not hasattr(labels, "__iter__")):
        raise UsageError(f"--labels {a.labels} is a {type(labels).__name__}, not a list of labels")
    return api.pack(
        model, a.name, example=example, labels=labels, preprocess=preprocess, metrics=_metrics_arg(a.metrics, ctx),
        description=a.description, tags=a.tag, trust_code=a.trust_code,
    )


@verb(
    "load",
    "load a bundle version into a notebook variable",
    arg("ref"),
    arg("as_kw", nargs="?", metavar="as"),
    arg("var", nargs="?", metavar="VAR", help="variable to bind (default: the bundle name, e.g. mnist_mlp)"),
    arg("--trust-code", action="store_true", help="allow running class source stored in the bundle"),
    arg("--device", default="cpu"),
    notebook_only=True,
)
def _nb_load(a: argparse.Namespace, ctx: Context) -> Loaded:
    import keyword

    if a.as_kw is not None and (a.as_kw != "as" or a.var is None):
        raise UsageError(f"expected `load REF as VAR`, got {' '.join(x for x in (a.ref, a.as_kw, a.var) if x)!r}")
    var = a.var or default_var_name(a.ref)
    if not var.isidentifier() or keyword.iskeyword(var):
        raise UsageError(f"{var!r} is not a valid variable name")
    model = api.load(a.ref, trust_code=a.trust_code, device=a.device)
    ctx.bind(var, model)
    info: BundleInfo = model.bundle_info  # type: ignore[assignment]  # set by restore()
    return Loaded(var, info)


@verb(
    "train",
    "train a notebook model with the live dashboard (nbmodelpack.fit, Adam)",
    arg("var", metavar="VAR", help="variable holding the torch.nn.Module"),
    arg("--data", required=True, metavar="VAR", help="variable holding the training DataLoader"),
    arg("--val", metavar="VAR", help="variable holding the validation DataLoader"),
    arg("--epochs", type=int, default=1),
    arg("--lr", type=float, default=1e-3, help="Adam learning rate"),
    arg("--device", default="cpu"),
    notebook_only=True,
)
def _nb_train(a: argparse.Namespace, ctx: Context) -> Text:
    model = _module_var(ctx, a.var, "train")
    data = ctx.lookup(a.data)
    val = ctx.lookup(a.val) if a.val else None
    if a.epochs < 1:
        raise UsageError(f"--epochs {a.epochs}: train at least one epoch")
    if not a.lr > 0:
        raise UsageError(f"--lr {a.lr}: the learning rate must be positive")
    import torch

    from .pytorch.fit import fit

    optimizer = torch.optim.Adam(model.parameters(), lr=a.lr)
    history = fit(model, data, epochs=a.epochs, optimizer=optimizer, val_loader=val, device=a.device)
    return Text(history.summary_line() + f"; the next `%modelpack pack {a.var}` records these metrics")



# ---- compression verbs (issue 4) -----------------------------------------------------------
@verb(
    "compress",
    "quantize and/or prune a version into a new version; report size, accuracy, latency",
    arg("ref"),
    arg("--quantize", metavar="int8|int4|fp16|bf16", help="weight-only int8/int4, or cast to fp16/bf16"),
    arg("--group-size", type=int, default=64, help="int4 group size (default 64)"),
    arg("--prune", type=float, default=0.0, metavar="FRACTION", help="fraction in [0, 1) of weights (or with --structured, of neurons/channels) to remove"),
    arg("--structured", action="store_true", help="remove whole neurons/channels (smaller tensors and compute)"),
    arg("--eval", metavar="VAR", help="notebook variable holding a DataLoader or (x, y); `mnist` = the held-out MNIST split"),
    arg("--png", metavar="FILE", help="also write the chart to FILE (PNG)"),
    arg("--json", action="store_true"),
)
def _compress(a: argparse.Namespace, ctx: Context) -> Any:
    from .compression import compress

    data = None
    if a.eval:
        data = "mnist" if a.eval == "mnist" else ctx.lookup(a.eval)
    report = compress(a.ref, quantize=a.quantize, group_size=a.group_size, prune=a.prune, structured=a.structured, eval=data)
    if a.png:
        report.save_png(a.png)
    return report



# ---- encryption and signing verbs (issue 5) ------------------------------------------------
def _ask_passphrase(ctx: Context, *, confirm: bool) -> Any:
    """$NBMODELPACK_PASSPHRASE, else asked without echo (never stored, never in history)."""
    import os

    from .crypto import PASSPHRASE_ENV, Passphrase

    if os.environ.get(PASSPHRASE_ENV):
        return Passphrase(os.environ[PASSPHRASE_ENV])
    first = ctx.getpass("passphrase: ")
    if confirm and first != ctx.getpass("passphrase (again): "):
        raise UsageError("the passphrases differ; nothing was encrypted")
    return Passphrase(first)


@verb(
    "keygen",
    "make an age identity (--age) or an ECDSA P-256 signing key pair (--signing)",
    arg("--age", nargs="?", const="", metavar="OUT", help="identity file (default: keys/age-identity.txt)"),
    arg("--signing", nargs="?", const="", metavar="OUT", help="private key PEM; public key goes to OUT.pub (default: keys/signing.pem)"),
    arg("--force", action="store_true", help="overwrite existing key files"),
)
def _keygen(a: argparse.Namespace, ctx: Context) -> Text:
    if (a.age is None) == (a.signing is None):
        raise UsageError("give exactly one of --age [OUT] or --signing [OUT]")
    if a.age is not None:
        from .crypto import keygen_age

        path, recipient = keygen_age(a.age or None, force=a.force)
        return Text(f"age identity written to {path} (mode 0600)\nrecipient: {recipient}")
    from .signing import fingerprint, keygen_signing

    private, public = keygen_signing(a.signing or None, force=a.force)
    return Text(f"signing key written to {private} (mode 0600)\npublic key: {public} ({fingerprint(public.read_bytes())[:23]}…)")


@verb(
    "encrypt",
    "encrypt weights and code with age: a new version",
    arg("ref"),
    arg("--to", action="append", default=[], metavar="RECIPIENT", help="age1… recipient or a file of them (repeatable)"),
    arg("--passphrase", action="store_true", help="encrypt with a passphrase (asked, or $NBMODELPACK_PASSPHRASE)"),
    arg("--tag", action="append", default=[], help="extra tag for the new version"),
    arg("--json", action="store_true"),
)
def _encrypt(a: argparse.Namespace, ctx: Context) -> BundleInfo:
    from .crypto import encrypt

    if bool(a.to) == a.passphrase:
        raise UsageError("give --to age1… (repeatable) or --passphrase")
    secret = _ask_passphrase(ctx, confirm=True) if a.passphrase else None
    return encrypt(a.ref, recipients=a.to or None, passphrase=secret, tags=a.tag)


@verb(
    "decrypt",
    "make a plaintext version of an encrypted bundle (explicit: writes the weights in clear)",
    arg("ref"),
    arg("--identity", metavar="FILE", help="age identity file (default: $NBMODELPACK_AGE_IDENTITY, keys/)"),
    arg("--passphrase", action="store_true", help="the bundle was encrypted with a passphrase"),
    arg("--tag", action="append", default=[], help="extra tag for the new version"),
    arg("--json", action="store_true"),
)
def _decrypt(a: argparse.Namespace, ctx: Context) -> BundleInfo:
    from .crypto import decrypt

    identity = _ask_passphrase(ctx, confirm=False) if a.passphrase else a.identity
    return decrypt(a.ref, identity=identity, tags=a.tag)


@verb(
    "sign",
    "sign a version's files (as stored) with OpenSSF model_signing: a new version",
    arg("ref"),
    arg("--key", metavar="PEM", help="ECDSA private key (default: $NBMODELPACK_SIGNING_KEY, keys/signing.pem)"),
    arg("--tag", action="append", default=[], help="extra tag for the new version"),
    arg("--json", action="store_true"),
)
def _sign(a: argparse.Namespace, ctx: Context) -> BundleInfo:
    from .signing import sign

    return sign(a.ref, key=a.key, tags=a.tag)


@verb(
    "verify",
    "check a version's signature (exit status 1 when it fails)",
    arg("ref"),
    arg("--key", action="append", metavar="PUB", help="public key (repeatable; default: trust policy keys, else your own)"),
    arg("--json", action="store_true"),
)
def _verify(a: argparse.Namespace, ctx: Context) -> Any:
    from .signing import verify

    return verify(a.ref, key=a.key)


# ---- remote verbs (issue 6) ----------------------------------------------------------------
@verb(
    "remote",
    "manage remotes: remote add NAME URL [--insecure] | remote ls | remote rm NAME",
    arg("action", choices=["add", "ls", "rm"]),
    arg("name", nargs="?"),
    arg("url", nargs="?", help="oci://HOST[:PORT]/NAMESPACE or file:///path"),
    arg("--insecure", action="store_true", help="plain HTTP (a registry on this machine or a test network)"),
    arg("--default", action="store_true", help="make it the remote publish uses without --to"),
    arg("--json", action="store_true"),
)
def _remote(a: argparse.Namespace, ctx: Context) -> Any:
    from . import remote

    if a.action == "ls":
        return remote.list_remotes()
    if not a.name:
        raise UsageError(f"remote {a.action} needs a NAME")
    if a.action == "rm":
        gone = remote.remove_remote(a.name)
        return Text(f"removed remote {gone.name} ({gone.url})")
    if not a.url:
        raise UsageError("remote add needs NAME and URL", hint="e.g. remote add team oci://127.0.0.1:5000/team --insecure")
    added = remote.add_remote(a.name, a.url, insecure=a.insecure, default=a.default)
    return Text(f"added remote {added}")


@verb(
    "login",
    "log in to a registry remote (saved in ~/.docker/config.json or $DOCKER_CONFIG)",
    arg("remote"),
    arg("-u", "--username"),
    arg("--password-stdin", action="store_true", help="read the password (or token) from standard input"),
    arg("--token", action="store_true", help="the secret is a bearer token, not a password"),
)
def _login(a: argparse.Namespace, ctx: Context) -> Text:
    from . import remote

    if not a.token and not a.username:
        raise UsageError("login needs --username (or --token)")
    what = "token" if a.token else "password"
    if a.password_stdin:
        import sys

        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = ctx.getpass(f"{what} for {a.remote}: ")
    if not secret:
        raise UsageError(f"empty {what}")
    if a.token:
        return Text(remote.login(a.remote, token=secret))
    return Text(remote.login(a.remote, a.username, secret))


@verb(
    "publish",
    "publish a version to a remote (tags: its version, latest, and --tag)",
    arg("ref"),
    arg("--to", metavar="REMOTE", help="remote name (default: the default remote)"),
    arg("--tag", help="an extra tag"),
    arg("--json", action="store_true"),
)
def _publish(a: argparse.Namespace, ctx: Context) -> Any:
    from . import remote

    return remote.publish(a.ref, a.to, tag=a.tag)


@verb("pull", "pull REMOTE/NAME:TAG into the local store (every blob re-hashed)", arg("ref"), arg("--as", dest="as_name", metavar="NAME", help="local name"), arg("--json", action="store_true"))
def _pull(a: argparse.Namespace, ctx: Context) -> BundleInfo:
    from . import remote

    return remote.pull(a.ref, as_name=a.as_name)



# ---- serving verbs (issue 7) ---------------------------------------------------------------
class ServerList(list[Any]):
    """Running servers (``servers``)."""

    def __str__(self) -> str:
        if not self:
            return "no servers running (start one with `modelpack serve REF`)"
        rows = [("REF", "URL", "PID", "WORKERS", "TOKEN")]
        rows += [(s.ref, s.url, str(s.pid), str(s.workers), "yes" if s.token else "no") for s in self]
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self]


def _serve_options(a: argparse.Namespace) -> Any:
    import os

    from .serving.app import IDENTITY_ENV, TOKEN_ENV, ServeOptions

    token = a.token or os.environ.get(TOKEN_ENV) or None
    identity = a.identity or os.environ.get(IDENTITY_ENV) or None
    return ServeOptions(
        ref=a.ref, host=a.host, port=a.port, workers=a.workers, token=token, max_batch=a.max_batch,
        max_delay_ms=a.max_delay_ms, identity=identity, max_body=a.max_body, threads=a.threads,
    )


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
    arg("--identity", help="age identity (key file) for an encrypted bundle"),
    arg("--max-body", type=int, default=8 * 1024 * 1024, help="largest request body in bytes"),
    arg("--threads", type=int, default=0, help="torch threads per worker (default: cores / workers)"),
)
def _serve(a: argparse.Namespace, ctx: Context) -> Any:
    from .serving.runner import serve, start

    if a.port is None:
        a.port = 0 if ctx.interactive else 8000
    options = _serve_options(a)
    if ctx.interactive:
        from .serving.handle import Server

        return Server(start(options), token=options.token)
    serve(options)
    return Text("server stopped")


@verb("servers", "list running model servers", arg("--json", action="store_true"))
def _servers(a: argparse.Namespace, ctx: Context) -> ServerList:
    from .serving.runner import servers

    return ServerList(servers())


@verb("stop", "stop a running model server", arg("which", help="bundle ref or name, pid, URL, or `all`"))
def _stop(a: argparse.Namespace, ctx: Context) -> Text:
    from .serving.runner import servers, stop

    if a.which == "all" and not servers():
        return Text("no servers running")
    stopped = stop(a.which)
    return Text("stopped " + ", ".join(f"{s.ref} ({s.url})" for s in stopped))


@verb(
    "containerize",
    "write a Docker build context and a KServe InferenceService for a bundle",
    arg("ref"),
    arg("dir"),
    arg("--port", type=int, default=8080, help="port inside the container"),
    arg("--image", help="image name for the KServe manifest (default modelpack-NAME:VERSION)"),
    arg("--workers", type=int, default=2),
)
def _containerize(a: argparse.Namespace, ctx: Context) -> Text:
    from .serving.containerize import containerize

    out = containerize(a.ref, a.dir, port=a.port, image=a.image, workers=a.workers)
    return Text(f"wrote {out}/Dockerfile and {out}/kserve.yaml; build with: docker build -t IMAGE {out}")
