"""Publish and pull a bundle of several weight layers to a loopback docker-registry, side by side with ``skopeo copy``.

    python bench/publish.py [--gib 1.0] [--layers 2] [--rounds 2] [--no-curl]

``PYTHONPATH=/other/checkout python bench/publish.py`` measures that checkout's
code (the registry helpers still come from this one), so two versions can be
compared against the same baseline.

Baseline: skopeo pushes our exported OCI layout (``oci:DIR``) and pulls it back
into an OCI layout. Ours: ``nbmodelpack.remote.publish`` / ``pull`` (pull
hashes every byte as it arrives). The floor: plain ``curl``, one request per blob,
blobs in parallel, nothing verified. Every side pushes different random weights of
the same size, so none can reuse (mount) another's blobs. It also prints the CPU
seconds the registry and each client spent: on a small machine the registry's own
hashing (Go, one pass over every byte it receives) is most of a push.

Goal: ours ≥ 1.5× skopeo's speed both ways (our time ≤ 0.67× skopeo's);
re-publish of the unchanged bundle < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client_cpu() -> float:
    """CPU seconds of this process and its finished children (skopeo, curl)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Curl:
    """Plain ``curl`` as the floor: one monolithic ``PUT`` per blob up, one ``GET`` per blob down, blobs in parallel, nothing verified."""

    def __init__(self, host: str, creds: str, workers: int = 4) -> None:
        self.base, self.creds, self.workers = f"http://{host}/v2", creds, workers

    def _curl(self, *args: str) -> str:
        return subprocess.run(["curl", "-sSf", "-u", self.creds, *args], check=True, capture_output=True, text=True).stdout

    def push(self, layout: Path, repo: str) -> None:
        index = json.loads((layout / "index.json").read_text())
        manifest_digest = index["manifests"][0]["digest"]
        raw = (layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_bytes()
        manifest = json.loads(raw)

        def one(desc: dict) -> None:  # type: ignore[type-arg]
            headers = self._curl("-X", "POST", "-D", "-", "-o", "/dev/null", f"{self.base}/{repo}/blobs/uploads/")
            location = next(line.split(":", 1)[1].strip() for line in headers.splitlines() if line.lower().startswith("location:"))
            url = location if location.startswith("http") else f"http://{self.base.split('/')[2]}{location}"
            sep = "&" if "?" in url else "?"
            path = layout / "blobs" / "sha256" / desc["digest"].split(":")[1]
            self._curl("-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{path}", "-o", "/dev/null", f"{url}{sep}digest={desc['digest']}")

        blobs = sorted([manifest["config"], *manifest["layers"]], key=lambda d: -d["size"])
        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(one, blobs))
        self._curl("-X", "PUT", "-H", f"Content-Type: {manifest['mediaType']}", "--data-binary", f"@{layout / 'blobs' / 'sha256' / manifest_digest.split(':')[1]}", "-o", "/dev/null", f"{self.base}/{repo}/manifests/1")

    def pull(self, repo: str, into: Path) -> None:
        into.mkdir(parents=True)
        raw = self._curl("-H", "Accept: application/vnd.oci.image.manifest.v1+json", f"{self.base}/{repo}/manifests/1")
        manifest = json.loads(raw)
        blobs = [manifest["config"], *manifest["layers"]]
        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(lambda d: self._curl("-L", "-o", str(into / d["digest"].split(":")[1]), f"{self.base}/{repo}/blobs/{d['digest']}"), blobs))


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--layers", type=int, default=2, help="weight layers (shards) the bytes are split over")
    parser.add_argument("--rounds", type=int, default=2, help="rotate who goes first; best time of each side counts")
    parser.add_argument("--no-curl", action="store_true", help="leave out the plain-curl floor")
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    sides = ["skopeo", "ours"] + ([] if args.no_curl or not shutil.which("curl") else ["curl"])
    times: dict[str, list[float]] = {f"{side} {op}": [] for side in sides for op in ("push", "pull")}
    times["republish"] = []
    cpu: dict[str, list[tuple[float, float]]] = {k: [] for k in times}  # (registry, client) CPU seconds
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
            curl = Curl(reg.host, creds)
            for r in range(args.rounds):
                # fresh random weights each round and side: nothing can be mounted or skipped
                refs = {side: _bundle(store, f"{side}{r}", size, args.layers) for side in sides}
                layouts = {side: tmp / f"layout-{side}{r}" for side in sides if side != "ours"}
                for side, layout in layouts.items():
                    api.export(refs[side], layout, format="dir")
                dest = f"docker://{reg.host}/bench/skopeo{r}:1"
                ops: dict[str, Callable[[], object]] = {
                    "skopeo push": lambda: subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"--dest-creds={creds}", f"oci:{layouts['skopeo']}:skopeo{r}:1", dest], check=True),  # noqa: B023
                    "skopeo pull": lambda: subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"--src-creds={creds}", dest, f"oci:{tmp / f'pulled-skopeo{r}'}:1"], check=True),  # noqa: B023
                    "ours push": lambda: remote.publish(refs["ours"], "bench"),  # noqa: B023
                    "ours pull": lambda: remote.pull(f"bench/ours{r}:1", store=Store(tmp / f"pulled-ours{r}")),  # noqa: B023
                    "curl push": lambda: curl.push(layouts["curl"], f"bench/curl{r}"),  # noqa: B023
                    "curl pull": lambda: curl.pull(f"bench/curl{r}", tmp / f"pulled-curl{r}"),  # noqa: B023
                }
                order = sides[r % len(sides) :] + sides[: r % len(sides)]
                steps = [f"{side} push" for side in order] + ["republish"] + [f"{side} pull" for side in order]
                for key in steps:
                    fn = ops.get(key) or (lambda: remote.publish(refs["ours"], "bench"))  # noqa: B023
                    reg0, me0, t0 = _cpu(reg.proc.pid), _client_cpu(), time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t0)
                    cpu[key].append((_cpu(reg.proc.pid) - reg0, _client_cpu() - me0))
                for p in [*layouts.values(), *(tmp / f"pulled-{side}{r}" for side in sides)]:
                    subprocess.run(["rm", "-rf", str(p)], check=True)
                for ref in refs.values():
                    api.rm(ref)
                api.gc(grace_seconds=0)

    mb = size / 1e6
    best = {k: min(v) for k, v in times.items()}

    def row(what: str) -> float:
        sk, mine = best[f"skopeo {what}"], best[f"ours {what}"]
        paired = statistics.median(s / o for s, o in zip(times[f"skopeo {what}"], times[f"ours {what}"], strict=True))
        line = f"{what:<5} skopeo {mb / sk:5.0f} MB/s ({sk:6.2f} s)   nbmodelpack {mb / mine:5.0f} MB/s ({mine:6.2f} s)"
        if f"curl {what}" in best:
            line += f"   curl {mb / best[f'curl {what}']:5.0f} MB/s ({best[f'curl {what}']:6.2f} s)"
        print(f"{line}   ratio {sk / mine:4.2f}x (median of paired rounds {paired:4.2f}x)")
        return sk / mine

    import nbmodelpack

    print(f"code: {Path(nbmodelpack.__file__).parents[1]}")
    print(f"bundle: {size / (1 << 30):.2f} GiB of weights in {args.layers} layers, loopback docker-registry, best of {args.rounds} rotated rounds")
    push, pull = row("push"), row("pull")
    print(f"re-publish of the unchanged bundle: {best['republish']:.3f} s (goal < 1 s)")
    print("CPU seconds per step (median): registry / client (ours: this process; skopeo, curl: the child processes)")
    for key, pairs in cpu.items():
        print(f"  {key:<12} {statistics.median(p[0] for p in pairs):6.2f} / {statistics.median(p[1] for p in pairs):6.2f}")
    ok = push >= 1.5 and pull >= 1.5 and best["republish"] < 1.0
    print("goal met" if ok else "goal NOT met (ratio = skopeo time / our time; >= 1.5 wanted)")


if __name__ == "__main__":
    main()
