"""Which optional extra a missing module belongs to, as the one-line error the doors print.

The base install (``pip install nbmodelpack``) lists, shows and checks bundles; torch,
signing, registries, serving, notebooks and the Jupyter sidebar come with extras
(``pyproject.toml``'s ``[project.optional-dependencies]``). A verb that needs one of
them ends in ``ModuleNotFoundError``; the doors turn it into a :class:`UsageError`
naming the ``pip install`` line with :func:`missing_extra`.
"""

from __future__ import annotations

from .errors import UsageError

# Top-level import name -> the extra that installs it (pyproject.toml's optional dependencies).
EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "torch",
    "torchvision": "torch",
    "pyrage": "crypto",
    "model_signing": "crypto",
    "OpenSSL": "crypto",
    "cryptography": "crypto",
    "requests": "remote",
    "starlette": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "numpy": "serve",
    "PIL": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "orjson": "serve",
    "prometheus_client": "serve",
    "httptools": "serve",
    "uvloop": "serve",
    "ray": "ray",
    "IPython": "notebook",
    "ipywidgets": "notebook",
    "matplotlib": "notebook",
    "jupyter_server": "lab",
    "jupyterlab": "lab",
}


def missing_extra(exc: ModuleNotFoundError) -> UsageError | None:
    """The one-line error for a module an extra provides; None if no extra provides it.

    Example:
        >>> print(missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch")))
        this needs the 'torch' extra: module 'torch' is not installed (pip install 'nbmodelpack[torch]')
        >>> missing_extra(ModuleNotFoundError("No module named 'nbmodelpack.nope'", name="nbmodelpack.nope")) is None
        True
    """
    if not exc.name:
        return None
    top = exc.name.split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return UsageError(f"this needs the {extra!r} extra: module {top!r} is not installed", hint=f"pip install 'nbmodelpack[{extra}]'")
