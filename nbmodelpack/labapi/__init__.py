"""Jupyter server extension: the REST API behind the JupyterLab sidebar.

Enabled automatically by ``jupyter-config/server-config/nbmodelpack.json``
(installed into ``etc/jupyter/jupyter_server_config.d`` by the wheel). Routes
live under ``/nbmodelpack/api/``: :mod:`.handlers` (a few lines each, one error
path) over :mod:`.views` (what the sidebar lists and shows) and :mod:`.actions`
(tag, delete, stop; publish, pull, serve as background :mod:`.jobs`), which call
:mod:`nbmodelpack.api`, :mod:`nbmodelpack.remote` and :mod:`nbmodelpack.serving`.

Example:
    >>> _jupyter_server_extension_points()
    [{'module': 'nbmodelpack.labapi'}]
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbmodelpack.labapi"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    import threading

    from .handlers import setup_handlers, warm_up

    setup_handlers(serverapp.web_app)
    threading.Thread(target=warm_up, name="nbmodelpack-warm-up", daemon=True).start()
    serverapp.log.info("nbmodelpack: REST API at %snbmodelpack/api/", serverapp.base_url)
