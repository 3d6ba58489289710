"""The crafted payloads are real: run the way a naive loader would, each one writes its sentinel.

This is what makes every "no sentinel" assertion of the suite able to fail:
the same bytes, handed to ``importlib`` + a call, to ``torch.export.load``, or
to ``exec``, do run. It runs them on purpose, in a fresh process, against the
session's sentinel directory (cleared afterwards).
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import subprocess_env

from .deliver import sentinels_present

NAIVE = r"""
import importlib, io, json, sys, zipfile
import torch

cases = json.loads(sys.stdin.read())
for case in cases:
    kind, data = case["kind"], case["data"]
    try:
        if kind == "class":
            module, _, name = data["class"].partition(":")
            obj = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
            obj(**data["kwargs"])
        elif kind == "pt2":
            torch.export.load(io.BytesIO(bytes.fromhex(data)))
        elif kind == "source":
            exec(compile(data, "model_src.py", "exec"), {})
    except Exception:
        pass  # the payload already ran, or the loader choked after it did
"""

CLASS_CASES = ["class-subprocess-run", "class-os-system", "class-builtins-open", "class-torch-save", "class-import-module", "class-sidefx-module"]
# Live in torch 2.14.1 as crafted; custom_objs, use_pickle and extra entries are allow-list cases (refused whether torch would run them or not).
PT2_CASES = ["pt2-legacy-weights", "pt2-legacy-constants", "pt2-opaque-obj", "pt2-sample-inputs"]


def _layer(case, filepath: str) -> bytes:
    doc = json.loads(case.manifest)
    digest = next(d["digest"] for d in doc["layers"] if d["annotations"]["org.cncf.model.filepath"] == filepath)
    data = case.blobs[digest]
    return data if isinstance(data, bytes) else data.read_bytes()


def test_every_payload_runs_when_a_naive_loader_meets_it(cases, sentinels):
    work = []
    for name in CLASS_CASES:
        work.append({"kind": "class", "data": json.loads(_layer(cases[name], "architecture.json"))})
    for name in PT2_CASES:
        work.append({"kind": "pt2", "data": _layer(cases[name], "model.pt2").hex()})
    work.append({"kind": "source", "data": _layer(cases["source-untrusted"], "model_src.py").decode()})
    try:
        subprocess.run([sys.executable, "-c", NAIVE], input=json.dumps(work), env=subprocess_env(), capture_output=True, text=True, timeout=300)
        fired = sentinels_present(sentinels)
        expected = {*CLASS_CASES, *PT2_CASES, "source-untrusted"} - {"class-import-module", "class-sidefx-module"} | {"sidefx-import", "sidefx-class"}
        assert sorted(expected - set(fired)) == []
    finally:
        for p in sentinels.iterdir():
            p.unlink()
