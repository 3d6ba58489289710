"""The verbs: one parser and one dispatcher shared by the CLI and ``%modelpack``.

:mod:`.framework` holds the :class:`Context`, the ``verb`` registry, the parser
and :func:`run`; one module per verb family registers its verbs on import
(store, model, security, remote); a door with verbs of its own registers
them too (the serving door: :mod:`nbmodelpack.serving.verbs`). Verbs return data
(:mod:`.results`) and the doors render it (:mod:`.render_text` for terminals,
:mod:`nbmodelpack.notebook` for HTML).

Example:
    >>> from nbmodelpack import commands
    >>> "tag" in commands.VERBS
    True
"""

from __future__ import annotations

# Registration order is the order `help` lists the verbs in.
# isort: off
from . import store_verbs, model_verbs, security_verbs, remote_verbs, tune_verbs  # noqa: F401
# isort: on
from .framework import VERBS, Context, Verb, arg, build_parser, json_arg, run, verb
from .model_verbs import default_var_name
from .results import BundleList, FsckReport, Help, Loaded, ServerList, Text

__all__ = [
    "VERBS",
    "BundleList",
    "Context",
    "FsckReport",
    "Help",
    "Loaded",
    "ServerList",
    "Text",
    "Verb",
    "arg",
    "build_parser",
    "default_var_name",
    "json_arg",
    "run",
    "verb",
]
