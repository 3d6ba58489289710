"""``finetune``: transfer learning from a bundle into a notebook variable (notebook only).

finetune trains and binds; it does not pack, so the user can look at the
result first. ``--pack NAME`` packs the child in the same line (its card then
says ``finetune of REF``, with the child's own train and validation metrics).
"""

from __future__ import annotations

import argparse
import keyword
from dataclasses import dataclass
from typing import Any

from .. import api
from ..bundle.info import BundleInfo
from ..bundle.refs import validate_name
from ..errors import UsageError
from .framework import Context, arg, verb
from .secrets import IDENTITY_ARGS, identity_of


@dataclass
class FineTuned:
    """What ``finetune`` bound, from which parent, the kept epoch and (with ``--pack``) the child."""

    var: str
    parent: BundleInfo
    summary: str
    child: BundleInfo | None = None

    def __str__(self) -> str:
        lines = [f"fine-tuned {self.parent.ref} as `{self.var}`: {self.summary}"]
        if self.child is not None:
            lines.append(f"packed {self.child.ref} ({self.child.parent_line})")
        else:
            lines.append(f"pack it with `%modelpack pack {self.var} --name NAME` (records: finetune of {self.parent.ref})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"var": self.var, "parent": self.parent.to_json(), "summary": self.summary, "child": self.child.to_json() if self.child else None}


@verb(
    "finetune",
    "fine-tune a bundle version on notebook data (freeze layers, new head) into a variable; packs only with --pack",
    arg("ref", help="bundle version to start from, e.g. mnist-mlp:1"),
    arg("as_kw", metavar="as", help="the word `as`"),
    arg("var", metavar="VAR", help="variable to bind the fine-tuned model to"),
    arg("--data", required=True, metavar="VAR", help="variable holding the training DataLoader"),
    arg("--val", metavar="VAR", help="variable holding the validation DataLoader"),
    arg("--freeze", action="append", metavar="PATTERN", help="glob over parameter names to keep fixed, e.g. 'net.1.*' (repeatable)"),
    arg("--head", type=int, metavar="N", help="replace the last Linear by a fresh one with N outputs (N classes)"),
    arg("--epochs", type=int, default=3),
    arg("--lr", type=float, default=1e-3, help="Adam learning rate"),
    arg("--pack", metavar="NAME", help="also pack the result as the next version of NAME"),
    arg("--example", metavar="VAR", help="with --pack: variable holding an example input"),
    arg("--trust-code", action="store_true", help="allow running class source stored in the bundle"),
    *IDENTITY_ARGS,
    arg("--device", default="cpu"),
    notebook_only=True,
)
def finetune_verb(args: argparse.Namespace, ctx: Context) -> FineTuned:
    if args.as_kw != "as" or not args.var.isidentifier() or keyword.iskeyword(args.var):
        raise UsageError(f"expected `finetune REF --data VAR as NAME`, got {args.as_kw} {args.var}")
    if args.pack:
        validate_name(args.pack)
    data = ctx.lookup(args.data)
    val = ctx.lookup(args.val) if args.val else None
    example = ctx.lookup(args.example) if args.example else None
    model = api.finetune(
        args.ref, data, val_data=val, freeze=args.freeze, head=args.head, epochs=args.epochs, lr=args.lr, device=args.device, trust_code=args.trust_code,
        identity=identity_of(args, ctx),
    )
    ctx.bind(args.var, model)
    parent: BundleInfo = model.bundle_info  # type: ignore[assignment]  # set by load
    child = api.pack(model, args.pack, example=example) if args.pack else None
    history: Any = model.fit_history  # set by finetune
    return FineTuned(args.var, parent, history.summary_line(), child)
