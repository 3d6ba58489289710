"""Teach IPython to show our results as HTML (bundle card and table, what ``load`` bound, a training history).

The core types carry no HTML (the format layer must not know about notebooks);
this door registers printers with IPython's ``text/html`` formatter by type
*name*, so nothing is imported until such an object is displayed. The package
root calls :func:`register` when it is imported inside IPython, and so does
``%load_ext nbmodelpack``.
"""

from __future__ import annotations

from typing import Any


def _card(info: Any) -> str:
    from .display import bundle_card_html

    return bundle_card_html(info)


def _loaded(result: Any) -> str:
    import html

    from .display import bundle_card_html

    note = f'<p class="nbmp-muted">{html.escape(result.note)}</p>' if result.note else ""
    return note + bundle_card_html(result.info, heading=result.headline)


def _history(history: Any) -> str:
    from .dashboard import history_html

    return history_html(history)


def _widget_view(title: str) -> Any:
    from .dashboard import widget_view

    return widget_view(title)


def _table(infos: Any) -> str:
    from .display import bundle_table_html

    return bundle_table_html(infos)


PRINTERS = (
    ("nbmodelpack.bundle.info", "BundleInfo", _card),
    ("nbmodelpack.commands.results", "Loaded", _loaded),
    ("nbmodelpack.commands.results", "BundleList", _table),
    ("nbmodelpack.pytorch.tracking", "History", _history),
)


def register(shell: Any) -> None:
    """Register the HTML printers with ``shell``'s display formatter, and the widget dashboard (idempotent).

    Example:
        >>> register(get_ipython())  # doctest: +SKIP
    """
    from ..progress import set_dashboard_view

    html = shell.display_formatter.formatters["text/html"]
    for module, name, printer in PRINTERS:
        html.for_type_by_name(module, name, printer)
    set_dashboard_view(_widget_view)


def html_of(result: Any) -> str | None:
    """The HTML IPython would show for ``result``, or ``None`` if it has none.

    Example:
        >>> html_of("plain text") is None
        True
    """
    for module, name, printer in PRINTERS:
        if any(cls.__module__ == module and cls.__name__ == name for cls in type(result).__mro__):
            return printer(result)
    method = getattr(result, "_repr_html_", None)
    return method() if callable(method) else None
