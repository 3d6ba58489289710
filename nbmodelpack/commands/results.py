"""What verbs return besides ``BundleInfo`` and the transforms' own reports: plain data.

The doors render these: :mod:`nbmodelpack.commands.render_text` as text or JSON
(terminal, ``text/plain``), :mod:`nbmodelpack.notebook` as HTML. ``str()`` of
each gives the terminal text, so a script may simply ``print`` a result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..bundle.info import BundleInfo


class Text(str):
    """A plain message result."""


@dataclass
class Help:
    """Usage text (``help``, ``-h``)."""

    text: str = field(default="")

    def __str__(self) -> str:
        return self.text


class BundleList(list[BundleInfo]):
    """Bundle versions (``ls``, ``import``); shown as a table.

    Example:
        >>> str(BundleList())
        'no bundles (pack one with nbmodelpack.pack or %modelpack pack)'
    """

    def __str__(self) -> str:
        from .render_text import bundle_table

        return bundle_table(self)

    def to_json(self) -> list[dict[str, Any]]:
        return [i.to_json() for i in self]


@dataclass
class FsckReport:
    """What ``fsck`` found: an empty list of problems means every blob matches its digest."""

    problems: list[Any]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if not self.problems:
            return "ok: every blob matches its digest"
        return "\n".join(f"damaged: {p}" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": [{"digest": p.digest, "filepath": p.filepath, "problem": p.problem} for p in self.problems]}


@dataclass
class Loaded:
    """What ``load`` bound: the variable name and the bundle's info."""

    var: str
    info: BundleInfo
    pulled: str | None = None  # the remote ref it was pulled from first, if any
    form: str = ""  # which form came back: "class", "modules", "live class", "source" or "graph"
    note: str | None = None  # for a graph: how to get the class back

    @property
    def headline(self) -> str:
        """One line: what was pulled (if anything), what was bound, and in which form.

        Example:
            >>> Loaded("net", BundleInfo(name="m", version=4, digest="sha256:" + "0" * 64), pulled="share/m:4").headline
            'pulled share/m:4 into the local store; loaded m:4 as net'
        """
        pulled = f"pulled {self.pulled} into the local store; " if self.pulled else ""
        form = f" ({self.form})" if self.form not in ("", "class") else ""  # say it when it is not the plain class
        return f"{pulled}loaded {self.info.ref} as {self.var}{form}"

    def __str__(self) -> str:
        return "\n".join([self.headline, *([self.note] if self.note else []), str(self.info)])

    def to_json(self) -> dict[str, Any]:
        return {"var": self.var, "form": self.form, "note": self.note, "bundle": self.info.to_json(), "pulled": self.pulled}


class ServerList(list[Any]):
    """Running model servers (``servers``); shown as a table."""

    def __str__(self) -> str:
        from .render_text import server_table

        return server_table(self)

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self]
