"""Publish and pull a 1 GiB bundle to a loopback docker-registry, side by side with ``skopeo copy``.

    python bench/publish.py [--gib 1.0]

Baseline: skopeo pushes our exported OCI layout (``oci:DIR``) and pulls it back
into an OCI layout. Ours: ``nbmodelpack.remote.publish`` / ``pull`` (pull
re-hashes every byte and fsyncs into the store). The two sides push different
random weights of the same size, so neither can reuse (mount) the other's
blobs. Goal: ours ≥ 0.9× skopeo both ways; re-publish of the unchanged bundle
< 1 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))


def _random_chunks(total: int, step: int = 64 << 20) -> Iterator[bytes]:
    left = total
    while left > 0:
        n = min(step, left)
        yield os.urandom(n)
        left -= n


def _bundle(store, name: str, size: int) -> str:  # type: ignore[no-untyped-def]
    from nbmodelpack.bundle import mediatypes as mt
    from nbmodelpack.bundle.draft import Draft
    from nbmodelpack.bundle.manifest import layer

    digest, n = store.put_chunks(_random_chunks(size), what="weights")
    weights = layer("model.safetensors", mt.WEIGHT, digest, n)
    return store.commit(Draft(name=name, layers=[weights], recipe={"op": "pack"})).ref


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["NBMODELPACK_HOME"] = str(tmp / "home")
        os.environ["DOCKER_CONFIG"] = str(tmp / "docker")
        os.environ.setdefault("NBMODELPACK_NO_PROGRESS", "1")
        from registry_server import running_registry

        from nbmodelpack import api, remote
        from nbmodelpack.store import Store

        store = api.get_store()
        ours = _bundle(store, "ours", size)
        theirs = _bundle(store, "theirs", size)
        layout = tmp / "layout"
        api.export(theirs, str(layout) + "/")
        mb = size / 1e6
        with running_registry(tmp / "registry") as reg:
            remote.add_remote("bench", f"oci://{reg.host}/bench", insecure=True)
            remote.login("bench", reg.user, reg.password)
            creds = f"{reg.user}:{reg.password}"
            dest = f"docker://{reg.host}/bench/theirs:1"

            t_skopeo_push = _timed(lambda: subprocess.run(
                ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"--dest-creds={creds}", f"oci:{layout}:theirs:1", dest],
                check=True,
            ))
            t_ours_push = _timed(lambda: remote.publish(ours, "bench"))
            t_republish = _timed(lambda: remote.publish(ours, "bench"))

            t_skopeo_pull = _timed(lambda: subprocess.run(
                ["skopeo", "copy", "-q", "--src-tls-verify=false", f"--src-creds={creds}", dest, f"oci:{tmp / 'skopeo-pulled'}:1"],
                check=True,
            ))
            t_ours_pull = _timed(lambda: remote.pull("bench/ours:1", store=Store(tmp / "pulled")))

        def row(what: str, skopeo: float, mine: float) -> None:
            print(f"{what:<6} skopeo {mb / skopeo:8.0f} MB/s ({skopeo:5.2f} s)   nbmodelpack {mb / mine:8.0f} MB/s ({mine:5.2f} s)   ratio {skopeo / mine:4.2f}x")

        print(f"bundle: {size / (1 << 30):.2f} GiB of weights, loopback docker-registry {reg.host}")
        row("push", t_skopeo_push, t_ours_push)
        row("pull", t_skopeo_pull, t_ours_pull)
        print(f"re-publish of the unchanged bundle: {t_republish:.3f} s (goal < 1 s)")
        ok = t_skopeo_push / t_ours_push >= 0.9 and t_skopeo_pull / t_ours_pull >= 0.9 and t_republish < 1.0
        print("goal met" if ok else "goal NOT met (ratio = skopeo time / our time; ≥ 0.9 wanted)")


if __name__ == "__main__":
    main()
