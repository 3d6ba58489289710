"""Verbs on notebook models and their weights: pack, load, train (notebook only) and compress."""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from typing import Any

from .. import api
from ..bundle.info import BundleInfo
from ..bundle.refs import parse
from ..errors import UsageError
from .framework import Context, arg, json_arg, verb
from .results import Loaded, Text
from .secrets import IDENTITY_ARGS, identity_of
from .spelling import spell


def _module_var(ctx: Context, name: str, verb_name: str) -> Any:
    """The notebook variable ``name``, which must hold a torch.nn.Module."""
    value = ctx.lookup(name)
    torch = sys.modules.get("torch")  # a Module instance means torch is already imported
    if torch is None or not isinstance(value, torch.nn.Module):
        raise UsageError(f"{name} is a {type(value).__name__}, not a torch.nn.Module", hint=f"{verb_name} VAR needs a variable holding a model")
    return value


def _metrics_arg(text: str, ctx: Context) -> dict[str, Any] | str:
    if text == "auto":
        return "auto"
    value = json_arg(text, "--metrics") if text.lstrip().startswith("{") else ctx.lookup(text)
    if not isinstance(value, dict):
        raise UsageError(f"--metrics {text}: expected 'auto', a JSON object or a dict variable, got {type(value).__name__}")
    return value


def default_var_name(ref: str) -> str:
    """The variable ``load`` binds when not told: the bundle name as an identifier.

    Example:
        >>> default_var_name("mnist-mlp:3")
        'mnist_mlp'
    """
    name = re.sub(r"\W", "_", parse(ref).name.rsplit("/", 1)[-1])
    if not name or name[0].isdigit():
        name = f"model_{name}"
    return f"{name}_" if keyword.iskeyword(name) else name


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
    arg("--shard-size", metavar="SIZE", help="write weights above SIZE (e.g. 500MB, 2GiB; default [pack] shard_size, else 2GiB) as shards"),
    notebook_only=True,
)
def pack_verb(args: argparse.Namespace, ctx: Context) -> BundleInfo:
    model = _module_var(ctx, args.var, "pack")
    example = ctx.lookup(args.example) if args.example else None
    labels = ctx.lookup(args.labels) if args.labels else None
    preprocess = ctx.lookup(args.preprocess) if args.preprocess else None
    if preprocess is not None and not isinstance(preprocess, dict):
        raise UsageError(f"--preprocess {args.preprocess} is a {type(preprocess).__name__}, not a dict")
    if labels is not None and (isinstance(labels, str | bytes) or not hasattr(labels, "__iter__")):
        raise UsageError(f"--labels {args.labels} is a {type(labels).__name__}, not a list of labels")
    return api.pack(
        model, args.name, example=example, labels=labels, preprocess=preprocess, metrics=_metrics_arg(args.metrics, ctx),
        description=args.description, tags=args.tag, trust_code=args.trust_code, shard_size=args.shard_size,
    )


@verb(
    "load",
    "load a bundle version into a notebook variable",
    arg("ref"),
    arg("as_kw", nargs="?", metavar="as"),
    arg("var", nargs="?", metavar="VAR", help="variable to bind (default: the bundle name, e.g. mnist_mlp)"),
    arg("--trust-code", action="store_true", help="allow running class source stored in the bundle"),
    arg("--arch", metavar="MODULE.CLASS", help="build this class for an artifact without architecture.json (allow-listed modules, or a transformers model class)"),
    *IDENTITY_ARGS,
    arg("--device", default="cpu"),
    arg("--verify", action="store_true", help="re-hash every weight file, even those the store recorded as intact"),
    arg("--int8-kernel", metavar="weight-only|dynamic", help="int8 bundles: weight-only (default; float kernels on the stored int8 weights) or dynamic (int8 activations too)"),
    notebook_only=True,
)
def load_verb(args: argparse.Namespace, ctx: Context) -> Loaded:
    if args.as_kw is not None and (args.as_kw != "as" or args.var is None):
        raise UsageError(f"expected `load REF as VAR`, got {' '.join(x for x in (args.ref, args.as_kw, args.var) if x)!r}")
    var = args.var or default_var_name(args.ref)
    if not var.isidentifier() or keyword.iskeyword(var):
        raise UsageError(f"{var!r} is not a valid variable name")
    model = api.load(args.ref, trust_code=args.trust_code, identity=identity_of(args, ctx), device=args.device, verify=args.verify, arch=args.arch, int8_kernel=args.int8_kernel)
    ctx.bind(var, model)
    from ..pytorch.restore import form_note

    info: BundleInfo = model.bundle_info  # type: ignore[assignment]  # set by restore()
    pulled = None if parse(args.ref).is_local else args.ref
    return Loaded(var, info, pulled=pulled, form=str(getattr(model, "bundle_form", "")), note=spell(form_note(model) or "", ctx.name) or None)


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
def train_verb(args: argparse.Namespace, ctx: Context) -> Text:
    model = _module_var(ctx, args.var, "train")
    data = ctx.lookup(args.data)
    val = ctx.lookup(args.val) if args.val else None
    if args.epochs < 1:
        raise UsageError(f"--epochs {args.epochs}: train at least one epoch")
    if not args.lr > 0:
        raise UsageError(f"--lr {args.lr}: the learning rate must be positive")
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    api.fit(model, data, epochs=args.epochs, optimizer=optimizer, val_loader=val, device=args.device)
    # The dashboard (or the terminal view) has already shown the summary: only say what comes next.
    return Text(f"next: %modelpack pack {args.var} --name NAME records these metrics on the card")


@verb(
    "compress",
    "quantize and/or prune a version into a new version; report size, accuracy, latency",
    arg("ref"),
    arg("--quantize", metavar="int8|int4|fp16|bf16", help="weight-only int8/int4, or cast to fp16/bf16"),
    arg("--group-size", type=int, default=64, help="int4 group size (default 64)"),
    arg("--prune", type=float, default=0.0, metavar="FRACTION", help="fraction in [0, 1) of weights (or with --structured, of neurons/channels) to remove"),
    arg("--structured", action="store_true", help="remove whole neurons/channels (smaller tensors and compute)"),
    arg("--eval", metavar="VAR", help="notebook variable holding a DataLoader or (x, y) to measure accuracy on"),
    arg("--int8-kernel", metavar="weight-only|dynamic", help="how the int8 child is measured and then loaded: weight-only (default) or dynamic (recorded in the recipe)"),
    arg("--png", metavar="FILE", help="also write the chart to FILE (PNG)"),
    arg("--json", action="store_true"),
)
def compress_verb(args: argparse.Namespace, ctx: Context) -> api.CompressionReport:
    data = ctx.lookup(args.eval) if args.eval else None
    report = api.compress(
        args.ref, quantize=args.quantize, group_size=args.group_size, prune=args.prune, structured=args.structured, eval=data, int8_kernel=args.int8_kernel
    )
    if args.png:
        report.save_png(args.png)
    return report
