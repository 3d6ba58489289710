"""Door drivers: run one operation through the Python API, the CLI, the magic; judge the outcome.

Every driver returns an :class:`Outcome` (did it succeed, what did it print or
raise). ``judge`` says what is wrong with it: an error that is not exactly one
line, a traceback, an exception that is not a ``ModelPackError`` (a crash), a
refused operation that left output behind, or a case that had to be refused
and was not.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbmodelpack
from nbmodelpack.errors import ModelPackError

# Cases every door sees (the bombs have their own memory tests; symlink-blob exists only in a share).
SMALL_CASES = [
    "class-linear-control",
    "class-subprocess-run",
    "class-os-system",
    "class-builtins-exec",
    "class-builtins-open",
    "class-torch-save",
    "class-import-module",
    "class-sidefx-module",
    "class-kwargs-object",
    "class-kwargs-not-a-dict",
    "class-deep-json",
    "modules-linear-control",
    "modules-subprocess-leaf",
    "modules-private-leaf",
    "modules-sidefx-leaf",
    "modules-huge-kwargs",
    "modules-deep-tree",
    "modules-leaf-with-children",
    "modules-child-named-forward",
    "pt2-legacy-weights",
    "pt2-legacy-constants",
    "pt2-opaque-obj",
    "pt2-sample-inputs",
    "pt2-custom-objs",
    "pt2-use-pickle",
    "pt2-extra-entry",
    "source-untrusted",
    "dup-architecture",
    "path-dotdot",
    "path-absolute",
    "path-nul",
    "path-backslash",
    "foreign-config",
    "foreign-layer",
    "zstd-json",
    "image-index",
    "confusable-name",
    "huge-tags",
]
# Refused when the manifest is parsed: a pull or an import of these must fail, whatever the policy.
PARSE_REFUSED = {"dup-architecture", "path-dotdot", "path-absolute", "path-nul", "path-backslash", "foreign-config", "image-index", "confusable-name", "huge-manifest"}
# A representative subset for the slow doors (subprocess CLI, serve, REST, registry):
# one per family (class target, import side effect, pt2 pickle, source, manifest shape, control).
SLOW_CASES = ["class-linear-control", "class-os-system", "class-import-module", "pt2-legacy-weights", "source-untrusted", "dup-architecture", "path-absolute"]


@dataclass
class Outcome:
    op: str
    ok: bool
    text: str  # what it printed (CLI, magic) or the exception's message (API)
    crash: str = ""  # an exception that is not a ModelPackError

    def error_lines(self) -> list[str]:
        return [ln for ln in self.text.splitlines() if ln.strip()]


def judge(o: Outcome, *, must_fail: bool, must_load: bool = False, leftover: Path | None = None) -> list[str]:
    """What is wrong with an outcome (empty when it behaved)."""
    out = []
    if o.crash:
        out.append(f"{o.op}: crashed with {o.crash}")
    if "Traceback" in o.text:
        out.append(f"{o.op}: printed a traceback")
    if must_fail and o.ok:
        out.append(f"{o.op}: was not refused")
    if must_load and not o.ok:
        out.append(f"{o.op}: failed on a genuine bundle: {o.text[:200]}")
    if not o.ok and not o.crash and len(o.error_lines()) != 1:
        out.append(f"{o.op}: error is {len(o.error_lines())} lines: {o.error_lines()[:3]}")
    if not o.ok and leftover is not None and leftover.exists():
        out.append(f"{o.op}: refused but left {leftover.name} behind")
    return out


def call_api(op: str, fn: Callable[[], Any]) -> Outcome:
    try:
        fn()
    except ModelPackError as exc:
        return Outcome(op, False, str(exc))
    except BaseException as exc:  # noqa: BLE001 - a crash is what we are looking for
        if isinstance(exc, KeyboardInterrupt):
            raise
        return Outcome(op, False, f"{type(exc).__name__}: {exc}"[:300], crash=type(exc).__name__)
    return Outcome(op, True, "")


def call_cli(op: str, argv: list[str]) -> Outcome:
    """``modelpack ARGV`` in this process (the CLI's own ``main``), stdout and stderr captured."""
    from nbmodelpack.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        return Outcome(op, False, err.getvalue() + f"{type(exc).__name__}: {exc}"[:300], crash=type(exc).__name__)
    if rc == 0:
        return Outcome(op, True, out.getvalue())
    # A failed verify prints its (multi-line) result with exit 1 and no error line.
    if op == "verify" and not err.getvalue().strip():
        return Outcome(op, True, out.getvalue())
    return Outcome(op, False, err.getvalue())


Step = tuple[Callable[[], Outcome], bool, "Path | None"]


def api_steps(ref: str, out: Path, example: Any) -> list[Step]:
    """Every API verb on ``ref``: ``(run it, loads the model?, output that must not survive a refusal)``."""
    tar, files = out / "api.tar", out / "api-files"
    return [
        (lambda: call_api("load", lambda: nbmodelpack.load(ref)), True, None),
        (lambda: call_api("show", lambda: nbmodelpack.show(ref)), False, None),
        (lambda: call_api("ls", lambda: nbmodelpack.ls()), False, None),
        (lambda: call_api("verify", lambda: nbmodelpack.verify(ref)), False, None),
        (lambda: call_api("export", lambda: nbmodelpack.export(ref, tar)), False, tar),
        (lambda: call_api("export_files", lambda: nbmodelpack.export_files(ref, files)), False, files),
        (lambda: call_api("compress", lambda: nbmodelpack.compress(ref, quantize="fp16", example=example)), True, None),
    ]


def cli_steps(ref: str, out: Path) -> list[Step]:
    """Every CLI verb on ``ref`` (``load`` is notebook-only; ``compress`` loads the model)."""
    tar, files = out / "cli.tar", out / "cli-files"
    return [
        (lambda: call_cli("show", ["show", ref]), False, None),
        (lambda: call_cli("show --card", ["show", ref, "--card"]), False, None),
        (lambda: call_cli("ls", ["ls"]), False, None),
        (lambda: call_cli("verify", ["verify", ref]), False, None),
        (lambda: call_cli("export", ["export", ref, "-o", str(tar)]), False, tar),
        (lambda: call_cli("export --files", ["export", ref, "--files", str(files)]), False, files),
        (lambda: call_cli("compress", ["compress", ref, "--quantize", "fp16"]), True, None),
    ]


def clean(out: Path) -> None:
    for p in out.iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
