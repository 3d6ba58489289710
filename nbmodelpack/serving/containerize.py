"""``modelpack containerize REF DIR``: a Docker build context and a KServe manifest for one bundle.

The context holds:

- ``Dockerfile``: slim Python base, pinned ``requirements.txt``, nbmodelpack's
  own source under ``src/``, the bundle as an OCI layout under ``bundle/``
  (imported into the image's store at build time), a non-root user, a
  ``HEALTHCHECK`` on ``/v2/health/ready`` and ``modelpack serve`` as entrypoint;
- ``kserve.yaml``: a ``ServingRuntime`` that declares the v2 protocol and an
  ``InferenceService`` that runs the image with it.

The container listens on 0.0.0.0, so the server refuses to start unless
``NBMODELPACK_SERVE_TOKEN`` is set (``docker run -e``, or the Secret that
``kserve.yaml`` names).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ..bundle.architecture import tree_nodes
from ..errors import UsageError
from .kserve import isvc_name, serving_runtime, token_env

APP = "/opt/modelpack"
HOME = "/home/modelpack"
# What the server needs at run time (nbmodelpack's core plus its serve extra); pinned to this machine's versions.
_RUNTIME = [
    "torch", "safetensors", "filelock", "pyyaml", "tomli-w", "tqdm", "zstandard",
    "starlette", "uvicorn", "httptools", "uvloop", "numpy", "pillow", "python-multipart", "orjson", "prometheus-client",
]
_LAUNCHER = """#!/usr/bin/env python3
# The `modelpack` command (nbmodelpack is on PYTHONPATH, not pip-installed).
import sys

from nbmodelpack.cli import main

if __name__ == "__main__":  # worker processes are spawned and re-import this file
    sys.exit(main())
"""


def _pins(extra: list[str]) -> list[str]:
    pins = []
    for name in [*_RUNTIME, *extra]:
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            continue
        pins.append(f"{name}=={version.split('+')[0]}")
    return pins


def _model_code(arch: dict[str, Any], src: Path) -> list[str]:
    """Make the bundle's model class importable in the image; return extra requirements.

    A class from an installed distribution becomes a pinned requirement; a class
    from a local module or package (``models.py`` next to a notebook) is copied
    into ``src/``; so is every leaf class of a ``modules`` tree. Exported graphs and
    stored source need nothing.
    """
    if arch.get("strategy") == "class":
        targets = [str(arch.get("class", ""))]
    elif arch.get("strategy") == "modules":  # every leaf of the tree (checked, so bounded)
        targets = [str(node.get("class", "")) for _, node in tree_nodes(arch.get("tree"), trust_code=True)]
    else:
        return []
    extra: list[str] = []
    for top, target in {t.split(":", 1)[0].split(".", 1)[0]: t for t in targets}.items():
        if top and top not in ("torch", "nbmodelpack"):
            extra += _code_of(top, target, src)
    return extra


def _code_of(top: str, target: str, src: Path) -> list[str]:
    """The requirement that provides package ``top``, or ``[]`` after copying its source into ``src``."""
    dists = md.packages_distributions().get(top)
    if dists:
        return list(dists)
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        raise UsageError(f"the model class {target} is not importable here, so it cannot go into the image")
    origin = Path(spec.origin)
    if origin.name == "__init__.py":
        shutil.copytree(origin.parent, src / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(origin, src / origin.name)
    return []


def dockerfile(*, ref: str, port: int, workers: int, encrypted: bool = False) -> str:
    """The Dockerfile text (``ref`` is the digest-pinned reference the image serves)."""
    key_note = (
        "# The bundle is encrypted: mount its age identity and pass -e NBMODELPACK_SERVE_IDENTITY=/path/to/key.\n" if encrypted else ""
    )
    health = f"import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:{port}/v2/health/ready', timeout=2).status != 200)"
    cmd = [ref, "--host", "0.0.0.0", "--port", str(port), "--workers", str(workers)]
    return f"""# Build:  docker build -t IMAGE .
# Run:    docker run -p {port}:{port} -e NBMODELPACK_SERVE_TOKEN=$(openssl rand -hex 16) IMAGE
# The server listens on 0.0.0.0 inside the container and refuses to start without a token.
# For a CPU-only torch wheel, build with --build-arg PIP_EXTRA_INDEX_URL=<a CPU wheel index>.
{key_note}FROM python:3.11-slim

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 NBMODELPACK_NO_PROGRESS=1 PYTHONPATH={APP}/src NBMODELPACK_HOME={HOME}/.nbmodelpack

RUN useradd --create-home --home-dir {HOME} --uid 10001 --shell /usr/sbin/nologin modelpack
COPY requirements.txt {APP}/requirements.txt
RUN pip install --no-cache-dir -r {APP}/requirements.txt
COPY src/ {APP}/src/
COPY bin/modelpack /usr/local/bin/modelpack
COPY bundle/ {APP}/bundle/

USER modelpack
WORKDIR {HOME}
RUN modelpack import {APP}/bundle

EXPOSE {port}
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 CMD {json.dumps(["python", "-c", health])}
ENTRYPOINT ["modelpack", "serve"]
CMD {json.dumps(cmd)}
"""


def kserve_manifest(*, name: str, image: str, port: int, ref: str, workers: int) -> str:
    """A ``ServingRuntime`` (v2 protocol) for this image and an ``InferenceService`` that uses it, as YAML.

    The InferenceService name follows KServe's naming rule, and the server answers under
    that name (``--model-name``), so ``/v2/models/<isvc>/infer`` reaches the model.
    """
    k8s_name = isvc_name(name)
    args = [ref, "--model-name", k8s_name, "--host", "0.0.0.0", "--port", str(port), "--workers", str(workers)]
    runtime = serving_runtime(f"modelpack-{k8s_name}", image=image, port=port, args=args, env=[token_env(k8s_name)])
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": k8s_name},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "modelpack"}, "runtime": f"modelpack-{k8s_name}", "protocolVersion": "v2"}}},
    }
    head = (
        f"# KServe: serve {name} with the Open Inference Protocol v2 (REST) on port {port}, as /v2/models/{k8s_name}.\n"
        f"# The token clients send comes from a Secret:\n"
        f"#   kubectl create secret generic {k8s_name}-token --from-literal=token=$(openssl rand -hex 16)\n"
    )
    return head + yaml.safe_dump_all([runtime, isvc], sort_keys=False)


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A sibling ``.part`` directory that becomes ``target`` only if the block succeeds."""
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty", hint="pick a new directory")
    tmp = target.with_name(target.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "src").mkdir(parents=True)
        (tmp / "bin").mkdir()
        yield tmp
        if target.exists():
            target.rmdir()
        tmp.replace(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _runtime_files(tmp: Path, extra: list[str]) -> None:
    """nbmodelpack's source, the ``modelpack`` launcher and pinned requirements."""
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, tmp / "src" / "nbmodelpack", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (tmp / "requirements.txt").write_text("\n".join(_pins(extra)) + "\n")
    launcher = tmp / "bin" / "modelpack"
    launcher.write_text(_LAUNCHER)
    launcher.chmod(0o755)
    (tmp / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\n")


def runtime_dockerfile() -> str:
    """The Dockerfile of the one runtime image ``--kserve`` uses for every bundle (no bundle inside)."""
    return f"""# The modelpack runtime for KServe: the storage initializer (`modelpack storage-init`) and the
# model server (`modelpack serve`) of every bundle; kserve.yaml says which runs when.
# Build:  docker build -t IMAGE .   and push IMAGE where the cluster can pull it.
FROM python:3.11-slim

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 NBMODELPACK_NO_PROGRESS=1 PYTHONPATH={APP}/src

RUN useradd --create-home --home-dir {HOME} --uid 10001 --shell /usr/sbin/nologin modelpack
COPY requirements.txt {APP}/requirements.txt
RUN pip install --no-cache-dir -r {APP}/requirements.txt
COPY src/ {APP}/src/
COPY bin/modelpack /usr/local/bin/modelpack

USER modelpack
WORKDIR {HOME}
ENTRYPOINT ["modelpack"]
"""


def kserve_context(ref: str, out: str | Path, *, port: int = 8080, image: str | None = None) -> Path:
    """Write ``kserve.yaml`` (storage container, runtime, InferenceService) and the runtime image's context.

    ``ref`` is a published bundle (``REMOTE/NAME:TAG``, ``HOST/REPO:TAG``, or a local ref
    that was published); the InferenceService pulls it by digest.

    Example:
        >>> kserve_context("team/mnist-mlp:1", "build/kserve")  # doctest: +SKIP
        PosixPath('build/kserve')
    """
    from ..version import __version__
    from .kserve import manifest_text, published_uri

    name, uri, encrypted = published_uri(ref)
    target = Path(out)
    with _staged(target) as tmp:
        _runtime_files(tmp, ["requests", "pyrage", "model-signing", "cryptography", "pyopenssl"])
        (tmp / "Dockerfile").write_text(runtime_dockerfile())
        text = manifest_text(name=name, uri=uri, image=image or f"modelpack-runtime:{__version__}", port=port, encrypted=encrypted)
        (tmp / "kserve.yaml").write_text(text)
    return target


def containerize(ref: str, out: str | Path, *, port: int = 8080, image: str | None = None, workers: int = 2) -> Path:
    """Write the build context for ``ref`` into ``out`` (which must be empty or absent).

    Example:
        >>> containerize("mnist-mlp:latest", "build/mnist")  # doctest: +SKIP
        PosixPath('build/mnist')
    """
    from .. import api

    target = Path(out)
    bundle = api.get_store().open(ref)
    info = bundle.info
    arch = bundle.read_json("architecture.json") if not info.encrypted else {"strategy": "export"}
    with _staged(target) as tmp:
        api.export(ref, tmp / "bundle", format="dir")
        extra = _model_code(arch, tmp / "src")
        if info.encrypted:
            extra.append("pyrage")
        _runtime_files(tmp, extra)
        pinned = f"{bundle.name}@{bundle.digest}"
        (tmp / "Dockerfile").write_text(dockerfile(ref=pinned, port=port, workers=workers, encrypted=info.encrypted))
        image_name = image or f"modelpack-{bundle.name}:{info.version or 'latest'}"
        (tmp / "kserve.yaml").write_text(kserve_manifest(name=bundle.name, image=image_name, port=port, ref=pinned, workers=workers))
    return target
