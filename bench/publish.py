"""Publish and pull a bundle of several weight layers to a loopback docker-registry, side by side with ``skopeo copy``.

    python bench/publish.py [--gib 1.0] [--layers 2] [--rounds 2] [--profile]

``PYTHONPATH=/other/checkout python bench/publish.py`` measures that checkout's
code (the registry helpers still come from this one), so two versions can be
compared against the same baseline.

Baseline: skopeo pushes our exported OCI layout (``oci:DIR``) and pulls it back
into an OCI layout. Ours: ``nbmodelpack.remote.publish`` / ``pull`` (pull
re-hashes every byte and fsyncs into the store). The two sides push different
random weights of the same size, so neither can reuse (mount) the other's
blobs. Goal: ours ≥ 1.5× skopeo's speed both ways (our time ≤ 0.67× skopeo's);
re-publish of the unchanged bundle < 1 s.
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
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))


def _random_chunks(total: int, step: int = 64 << 20) -> Iterator[bytes]:
    left = total
    while left > 0:
        n = min(step, left)
        yield os.urandom(n)
        left -= n


def _bundle(store, name: str, size: int, layers: int) -> str:  # type: ignore[no-untyped-def]
    """A bundle whose ``size`` bytes of random weights are split over ``layers`` shard layers."""
    from nbmodelpack.bundle import mediatypes as mt
    from nbmodelpack.bundle.draft import Draft
    from nbmodelpack.bundle.manifest import layer

    shards = []
    for i in range(layers):
        part = size // layers + (1 if i < size % layers else 0)
        digest, n = store.put_chunks(_random_chunks(part), what="weights")
        shards.append(layer(f"model-{i + 1:05d}-of-{layers:05d}.safetensors", mt.WEIGHT, digest, n))
    return store.commit(Draft(name=name, layers=shards, recipe={"op": "pack"})).ref


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--layers", type=int, default=2, help="weight layers (shards) the bytes are split over")
    parser.add_argument("--rounds", type=int, default=2, help="alternate who goes first; best time of each side counts")
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    times: dict[str, list[float]] = {k: [] for k in ("skopeo push", "ours push", "skopeo pull", "ours pull", "republish")}
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["NBMODELPACK_HOME"] = str(tmp / "home")
        os.environ["DOCKER_CONFIG"] = str(tmp / "docker")
        os.environ.setdefault("NBMODELPACK_NO_PROGRESS", "1")
        from registry_server import running_registry

        from nbmodelpack import api, remote
        from nbmodelpack.store import Store

        store = api.get_store()
        with running_registry(tmp / "registry") as reg:
            remote.add_remote("bench", f"oci://{reg.host}/bench", insecure=True)
            remote.login("bench", reg.user, reg.password)
            creds = f"{reg.user}:{reg.password}"
            for r in range(args.rounds):
                # fresh random weights each round and side: nothing can be mounted or skipped
                ours = _bundle(store, f"ours{r}", size, args.layers)
                theirs = _bundle(store, f"theirs{r}", size, args.layers)
                layout = tmp / f"layout{r}"
                api.export(theirs, layout, format="dir")
                dest = f"docker://{reg.host}/bench/theirs{r}:1"

                def skopeo_push() -> None:
                    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"--dest-creds={creds}", f"oci:{layout}:theirs{r}:1", dest], check=True)  # noqa: B023

                def skopeo_pull() -> None:
                    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"--src-creds={creds}", dest, f"oci:{tmp / f'skopeo-pulled{r}'}:1"], check=True)  # noqa: B023

                steps = [("skopeo push", skopeo_push), ("ours push", lambda: remote.publish(ours, "bench"))]  # noqa: B023
                steps += [("republish", lambda: remote.publish(ours, "bench"))]  # noqa: B023
                pulls = [("skopeo pull", skopeo_pull), ("ours pull", lambda: remote.pull(f"bench/ours{r}:1", store=Store(tmp / f"pulled{r}")))]  # noqa: B023
                if r % 2:
                    steps = [steps[1], steps[2], steps[0]]
                    pulls.reverse()
                for key, fn in steps + pulls:
                    times[key].append(_timed(fn))
                for p in (layout, tmp / f"skopeo-pulled{r}", tmp / f"pulled{r}"):
                    subprocess.run(["rm", "-rf", str(p)], check=True)

    mb = size / 1e6
    best = {k: min(v) for k, v in times.items()}

    def row(what: str) -> float:
        sk, mine = best[f"skopeo {what}"], best[f"ours {what}"]
        print(f"{what:<6} skopeo {mb / sk:7.0f} MB/s ({sk:6.2f} s)   nbmodelpack {mb / mine:7.0f} MB/s ({mine:6.2f} s)   ratio {sk / mine:4.2f}x")
        return sk / mine

    import nbmodelpack

    print(f"code: {Path(nbmodelpack.__file__).parents[1]}")
    print(f"bundle: {size / (1 << 30):.2f} GiB of weights in {args.layers} layers, loopback docker-registry, best of {args.rounds} alternating rounds")
    push, pull = row("push"), row("pull")
    print(f"re-publish of the unchanged bundle: {best['republish']:.3f} s (goal < 1 s)")
    ok = push >= 1.5 and pull >= 1.5 and best["republish"] < 1.0
    print("goal met" if ok else "goal NOT met (ratio = skopeo time / our time; >= 1.5 wanted)")


if __name__ == "__main__":
    main()
