"""KServe straight from the registry: publishing is deploying, one runtime image for every bundle.

``modelpack containerize REF DIR --kserve`` writes three objects into ``kserve.yaml``:

- a ``ClusterStorageContainer`` for ``modelpack://`` URIs: KServe runs it as the
  pod's storage initializer with ``[URI, /mnt/models]``; ``modelpack storage-init``
  pulls the bundle by digest (the verified pull: every blob hashed, signatures
  checked under the trust policy) into a store under ``/mnt/models``;
- a ``ServingRuntime`` running ``modelpack serve`` on that store (Open Inference
  Protocol v2), with the served model name set to the InferenceService's name;
- an ``InferenceService`` whose ``storageUri`` is ``modelpack://HOST/REPO@sha256:…``.

Names are made to fit KServe's rule for InferenceService names (a DNS-1035 label),
and the server answers under that same name, so ``/v2/models/<isvc>/infer`` works.
An encrypted bundle gets its age identity from a Kubernetes Secret mounted as a file.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..errors import IntegrityError, UsageError
from .options import IDENTITY_ENV, TOKEN_ENV

SCHEME = "modelpack://"
MOUNT = "/mnt/models"  # where KServe's storage initializer writes and the predictor reads
STORE_SUBDIR = "store"
LOCAL_NAME = "model"  # the one bundle a storage-initialized store holds
RUNTIME = "modelpack-v2"
# The pod's store is the initializer's download; home (records key, config) is scratch.
_STORE_ENV = (
    {"name": "NBMODELPACK_STORE", "value": f"{MOUNT}/{STORE_SUBDIR}"},
    {"name": "NBMODELPACK_HOME", "value": "/tmp/modelpack"},
    {"name": "NBMODELPACK_NO_PROGRESS", "value": "1"},
)
KEY_DIR = "/var/run/secrets/modelpack-key"
KEY_FILE = "identity.txt"
# KServe derives Service and Deployment names from the InferenceService name (adding
# "-predictor" and more); 45 characters keeps every derived name within 63.
MAX_NAME = 45

_DIGEST_URI = re.compile(r"modelpack://(?P<host>[A-Za-z0-9.-]+(?::\d+)?)/(?P<repo>[a-z0-9][a-z0-9._/-]*)@(?P<digest>sha256:[0-9a-f]{64})")


def isvc_name(name: str) -> str:
    """A bundle name made into a valid InferenceService name (lowercase DNS-1035 label, ≤ 45 chars).

    Example:
        >>> isvc_name("3d_unet.v2")
        'm-3d-unet-v2'
    """
    label = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-")
    if not label or not label[0].isalpha():
        label = f"m-{label}".rstrip("-")
    if len(label) > MAX_NAME:  # keep names apart that share a long prefix
        label = label[: MAX_NAME - 9].rstrip("-") + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return label


def storage_uri(host: str, repo: str, digest: str) -> str:
    """The ``storageUri`` that names one published bundle by digest.

    Example:
        >>> storage_uri("registry.example.com", "team/mnist-mlp", "sha256:" + "a" * 64)[:48]
        'modelpack://registry.example.com/team/mnist-mlp@'
    """
    uri = f"{SCHEME}{host}/{repo}@{digest}"
    parse_storage_uri(uri)
    return uri


def parse_storage_uri(uri: str) -> str:
    """``modelpack://HOST/REPO@sha256:…`` → the remote reference ``HOST/REPO@sha256:…`` to pull.

    Example:
        >>> parse_storage_uri("modelpack://127.0.0.1:5000/team/x@sha256:" + "0" * 64)[:25]
        '127.0.0.1:5000/team/x@sha'
    """
    match = _DIGEST_URI.fullmatch(uri)
    if match is None:
        raise UsageError(
            f"{uri[:120]!r} is not a modelpack storage URI",
            hint="use modelpack://HOST/REPO@sha256:DIGEST (a digest, not a tag, so every pod serves the same bytes)",
        )
    return f"{match['host']}/{match['repo']}@{match['digest']}"


def storage_init(uri: str, dest: str | Path) -> str:
    """Pull the bundle ``uri`` names into a store under ``dest`` (KServe's storage-initializer step).

    Returns the local reference the ServingRuntime serves. The pull is the verified
    one (every blob hashed, the trust policy applied); nothing is left in ``dest``
    if it fails.

    Example:
        >>> storage_init("modelpack://registry.example.com/team/x@sha256:" + "0" * 64, "/mnt/models")  # doctest: +SKIP
        'model'
    """
    from .. import api

    ref = parse_storage_uri(uri)
    root = Path(dest) / STORE_SUBDIR
    fresh = not root.exists()
    try:
        info = api.pull(ref, as_name=LOCAL_NAME, store=api.get_store(root))
    except BaseException:
        if fresh:  # a pod that failed to start leaves no half store for the next attempt
            shutil.rmtree(root, ignore_errors=True)
        raise
    return f"{LOCAL_NAME}@{info.digest}"


def manifests(*, name: str, uri: str, image: str, port: int = 8080, encrypted: bool = False) -> list[dict[str, Any]]:
    """The ClusterStorageContainer, ServingRuntime and InferenceService for one published bundle.

    Example:
        >>> docs = manifests(name="3d_unet.v2", uri="modelpack://r.example/x@sha256:" + "0" * 64, image="modelpack:1")
        >>> [d["kind"] for d in docs], docs[2]["metadata"]["name"]
        (['ClusterStorageContainer', 'ServingRuntime', 'InferenceService'], 'm-3d-unet-v2')
    """
    parse_storage_uri(uri)
    isvc = isvc_name(name)
    non_root = {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False}
    # A private registry: a standard docker-registry Secret (`kubectl create secret docker-registry`).
    registry_auth = {"name": "DOCKER_AUTH_CONFIG", "valueFrom": {"secretKeyRef": {"name": "modelpack-registry", "key": ".dockerconfigjson", "optional": True}}}
    storage = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": "modelpack"},
        "spec": {
            "container": {
                "name": "storage-initializer",  # the name KServe looks for
                "image": image,
                "command": ["modelpack", "storage-init"],  # KServe appends [storageUri, /mnt/models]
                # The store on the shared volume holds the record key too, so the server believes
                # the records this pull wrote and maps the weights without hashing them again.
                "env": [*_STORE_ENV, registry_auth],
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                "securityContext": non_root,
            },
            "supportedUriFormats": [{"prefix": SCHEME}],
        },
    }
    # {{.Name}} is the InferenceService name: clients call /v2/models/<that name>/infer.
    args = [LOCAL_NAME, "--model-name", "{{.Name}}", "--host", "0.0.0.0", "--port", str(port), "--workers", "1"]
    runtime = serving_runtime(RUNTIME, image=image, port=port, args=args, env=list(_STORE_ENV), command=["modelpack", "serve"])
    model: dict[str, Any] = {
        "modelFormat": {"name": "modelpack"},
        "runtime": RUNTIME,
        "protocolVersion": "v2",
        "storageUri": uri,
        # The server listens on 0.0.0.0 in the pod, so it requires a bearer token.
        "env": [token_env(isvc)],
    }
    predictor: dict[str, Any] = {"model": model}
    if encrypted:
        model["env"].append({"name": IDENTITY_ENV, "value": f"{KEY_DIR}/{KEY_FILE}"})
        model["volumeMounts"] = [{"name": "age-key", "mountPath": KEY_DIR, "readOnly": True}]
        predictor["volumes"] = [{"name": "age-key", "secret": {"secretName": f"{isvc}-age-key", "defaultMode": 0o400}}]
    service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": isvc, "annotations": {"modelpack.dev/bundle": name}},
        "spec": {"predictor": predictor},
    }
    return [storage, runtime, service]


def token_env(isvc: str) -> dict[str, Any]:
    """The container env entry that gives the server its bearer token from the ``<isvc>-token`` Secret.

    Example:
        >>> token_env("m-mnist")["valueFrom"]["secretKeyRef"]
        {'name': 'm-mnist-token', 'key': 'token'}
    """
    return {"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": f"{isvc}-token", "key": "token"}}}


def serving_runtime(name: str, *, image: str, port: int, args: list[str], env: list[dict[str, Any]], command: list[str] | None = None) -> dict[str, Any]:
    """A ``ServingRuntime`` running ``modelpack serve`` (v2 protocol) as a non-root user, with health probes.

    Example:
        >>> serving_runtime("rt", image="i", port=8080, args=[], env=[])["spec"]["protocolVersions"]
        ['v2']
    """
    container: dict[str, Any] = {"name": "kserve-container", "image": image, **({"command": command} if command else {}), "args": args, "env": env}
    container.update({
        "ports": [{"containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": port}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": port}, "periodSeconds": 20},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False},
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    })
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": name},
        "spec": {
            "supportedModelFormats": [{"name": "modelpack", "version": "1", "autoSelect": True}],
            "protocolVersions": ["v2"],
            "containers": [container],
        },
    }


def manifest_text(*, name: str, uri: str, image: str, port: int = 8080, encrypted: bool = False) -> str:
    """:func:`manifests` as one YAML file, headed by the ``kubectl`` commands that create its Secrets."""
    isvc = isvc_name(name)
    lines = [
        f"# KServe: {name} served from {uri}",
        f"# InferenceService {isvc}: clients call /v2/models/{isvc}/infer with the token below.",
        "# The ClusterStorageContainer and ServingRuntime serve every modelpack bundle; apply them once.",
        f"#   kubectl create secret generic {isvc}-token --from-literal=token=$(openssl rand -hex 16)",
        "#   private registry: kubectl create secret docker-registry modelpack-registry --docker-server=HOST ...",
    ]
    if encrypted:
        lines.append(f"#   encrypted bundle: kubectl create secret generic {isvc}-age-key --from-file={KEY_FILE}=PATH/TO/age-identity.txt")
    docs = manifests(name=name, uri=uri, image=image, port=port, encrypted=encrypted)
    return "\n".join(lines) + "\n" + yaml.safe_dump_all(docs, sort_keys=False)


def published_uri(ref: str) -> tuple[str, str, bool]:
    """``(bundle name, storage URI, encrypted)`` for a remote ref, or a local ref that was published.

    Example:
        >>> published_uri("127.0.0.1:5000/team/mnist-mlp:1")  # doctest: +SKIP
        ('mnist-mlp', 'modelpack://127.0.0.1:5000/team/mnist-mlp@sha256:…', False)
    """
    from .. import api
    from ..bundle import refs
    from ..bundle.info import BundleInfo
    from ..bundle.manifest import parse_manifest
    from ..remote import published
    from ..remote.config import split_remote_ref
    from ..remote.connect import open_transport

    local = None
    if refs.parse(ref).remote is None:
        local = api.get_store().open(ref)
        places = published.places(local.store).get(local.digest, [])
        if not places:
            raise UsageError(f"{ref} was never published", hint=f"publish it first: modelpack publish {ref} REMOTE, then pass REMOTE/NAME:TAG")
        ref = places[0]
    remote, reference, repo = split_remote_ref(ref)
    if remote.kind == "file":
        raise UsageError(f"{remote.name} is a directory remote; KServe pulls from an OCI registry", hint="publish to a registry remote")
    name = repo.rsplit("/", 1)[-1]
    if local is not None:  # the very version named, by digest: the tag it was published under may have moved since
        return name, storage_uri(remote.host, repo, local.digest), local.info.encrypted
    raw, digest = open_transport(remote).get_manifest(repo, reference.digest or reference.tag or "latest")  # bytes checked against digest
    if reference.digest and digest != reference.digest:
        raise IntegrityError(f"{ref} answered with another manifest ({digest[:19]}…)", hint="the registry's copy is damaged or hostile")
    encrypted = BundleInfo.from_manifest(parse_manifest(raw, digest), name=name).encrypted
    return name, storage_uri(remote.host, repo, digest), encrypted
