"""The model card: ``README.md`` with YAML front matter, Hugging Face style."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import BundleFormatError
from .format import fmt_metric, plain
from .metrics import labelled, sectioned, text


@dataclass
class Card:
    """Front matter (a dict) plus a Markdown body."""

    front: dict[str, Any] = field(default_factory=dict)
    body: str = ""

    def render(self) -> str:
        """The card as text.

        Example:
            >>> Card({"name": "m", "version": 1}, "# m\\n").render().splitlines()[:3]
            ['---', 'name: m', 'version: 1']
        """
        front = yaml.safe_dump(self.front, sort_keys=False, allow_unicode=True).strip()
        return f"---\n{front}\n---\n\n{self.body.strip()}\n"

    @classmethod
    def parse(cls, text: str) -> Card:
        """Split a card into front matter and body."""
        if not text.startswith("---"):
            return cls({}, text)
        parts = text.split("\n---", 1)
        if len(parts) != 2:
            raise BundleFormatError("model card front matter is not closed with ---")
        try:
            front = yaml.safe_load(parts[0][3:]) or {}
        except yaml.YAMLError as exc:
            raise BundleFormatError("model card front matter is not YAML") from exc
        if not isinstance(front, dict):
            raise BundleFormatError("model card front matter is not a mapping")
        return cls(front, parts[1].lstrip("-").lstrip("\n"))


def default_body(front: dict[str, Any]) -> str:
    """A readable Markdown body made from the front matter."""
    name = front.get("name", "model")
    lines = [f"# {name}", ""]
    if front.get("description"):
        lines += [str(front["description"]), ""]
    rows = [
        ("Version", front.get("version")),
        ("Architecture", _arch_text(front.get("architecture"))),
        ("Parameters", front.get("parameters")),
        ("Precision", front.get("precision")),
        ("Size (bytes)", front.get("size_bytes")),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows if v not in (None, "")]
    metrics = sectioned(front.get("metrics") if isinstance(front.get("metrics"), dict) else {})
    if metrics:
        lines += ["", "## Metrics", "", "Measured on this version's weights.", "", "| measured on | metric | value |", "|---|---|---|"]
        lines += [f"| {section} | {k} | {fmt_metric(v)} |" for section, values in metrics.items() for k, v in values.items()]
    lineage = [step for step in front.get("lineage") or [] if isinstance(step, dict)]
    if lineage:
        lines += ["", "## Lineage", ""]
        lines += [f"- {lineage_line(step, last=i == len(lineage) - 1)}" for i, step in enumerate(lineage)]
    lines += [
        "",
        "## Load",
        "",
        "```python",
        "import nbmodelpack",
        f"model = nbmodelpack.load(\"{name}:{front.get('version', 'latest')}\")",
        "```",
    ]
    return "\n".join(lines) + "\n"


def lineage_line(step: dict[str, Any], *, last: bool = False) -> str:
    """One lineage step in words; an ancestor's metrics are shown as that ancestor's.

    Example:
        >>> lineage_line({"op": "pack", "ref": "m:1", "metrics": {"validation": {"accuracy": 97.0}}})
        'm:1: pack (its metrics: validation accuracy 97)'
        >>> lineage_line({"op": "finetune", "parent_ref": "m:1", "params": {"epochs": 2}}, last=True)
        'this version: finetune of m:1 (epochs=2)'
    """
    who = "this version" if last else plain(step.get("ref") or "an ancestor")
    what = plain(step.get("op") or "?")
    if step.get("parent_ref"):
        what += f" of {plain(step['parent_ref'])}"
    notes = [_params(step.get("params"))]
    if not last and isinstance(step.get("metrics"), dict) and labelled(step["metrics"]):
        notes.append(f"its metrics: {text(step['metrics'])}")
    shown = "; ".join(n for n in notes if n)
    return f"{who}: {what}" + (f" ({shown})" if shown else "")


def lineage_lines(recipe: dict[str, Any]) -> list[str]:
    """Every step of a version's recipe in words, oldest first (the card's, ``show``'s and the sidebar's lineage).

    Example:
        >>> lineage_lines({"op": "finetune", "parent_ref": "m:1", "params": {}, "lineage": [{"op": "pack", "ref": "m:1"}]})
        ['m:1: pack', 'this version: finetune of m:1']
    """
    if not isinstance(recipe, dict) or not recipe:
        return []
    steps = [s for s in recipe.get("lineage", []) if isinstance(s, dict) and s] + [{k: v for k, v in recipe.items() if k != "lineage"}]
    return [lineage_line(step, last=i == len(steps) - 1) for i, step in enumerate(steps)]


def _arch_text(arch: Any) -> str:
    if isinstance(arch, dict):
        return f"{arch.get('class', '?')} ({arch.get('strategy', '?')})"
    return str(arch or "")


def _params(params: Any) -> str:
    if not params:
        return ""
    return plain(", ".join(f"{k}={v}" for k, v in params.items() if not isinstance(v, dict | list)), 400)
