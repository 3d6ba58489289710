"""The model card: ``README.md`` with YAML front matter, Hugging Face style."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import BundleFormatError
from .format import fmt_metric


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
    metrics = front.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {fmt_metric(v)} |" for k, v in metrics.items()]
    lineage = front.get("lineage") or []
    if lineage:
        lines += ["", "## Lineage", ""]
        lines += [f"- {step.get('op')} {_params(step.get('params'))}".rstrip() for step in lineage]
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


def _arch_text(arch: Any) -> str:
    if isinstance(arch, dict):
        return f"{arch.get('class', '?')} ({arch.get('strategy', '?')})"
    return str(arch or "")


def _params(params: Any) -> str:
    if not params:
        return ""
    return ", ".join(f"{k}={v}" for k, v in params.items())
