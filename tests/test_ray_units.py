"""Ray Serve engine without a cluster: its batch runner and the `--engine ray` option checks."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nbmodelpack.errors import UsageError
from nbmodelpack.serving.options import ServeOptions, validate

pytest.importorskip("ray.serve")
from nbmodelpack.serving.ray import application, run_items  # noqa: E402


def _double(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = inputs["x"]
    if np.isnan(x).any():
        raise ValueError("nan in input")
    return {"y": x * 2}


def test_run_items_batches_compatible_requests_in_one_call_and_splits_rows_back():
    calls: list[int] = []

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return _double(inputs)

    items = [{"x": np.full((1, 3), 1.0, np.float32)}, {"x": np.full((2, 3), 2.0, np.float32)}, {"x": np.full((1, 4), 3.0, np.float32)}]
    results = run_items(run, items)
    assert sorted(calls) == [1, 3]  # the two [*, 3] requests ran together, the [*, 4] one alone
    assert [r["y"].tolist() for r in results if isinstance(r, dict)] == [[[2.0] * 3], [[4.0] * 3] * 2, [[6.0] * 4]]


def test_run_items_fails_only_the_bad_request():
    good, bad = {"x": np.ones((1, 2), np.float32)}, {"x": np.full((1, 2), np.nan, np.float32)}
    results = run_items(_double, [good, bad, good])
    assert isinstance(results[1], ValueError)
    assert [r["y"].tolist() for r in (results[0], results[2]) if isinstance(r, dict)] == [[[2.0, 2.0]]] * 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"replicas": 0}, "replicas= must be ≥ 1"),
        ({"min_replicas": 2}, "min_replicas= needs max_replicas="),
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas= ≥ max(1, min_replicas="),
        ({"max_replicas": 2, "target_ongoing": 0}, "target_ongoing= > 0"),
        ({"engine": "triton"}, "engine='triton' is not one of: modelpack, ray"),
    ],
)
def test_engine_ray_refuses_impossible_scaling_options(changes, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        validate(ServeOptions(ref="m:1", **{"engine": "ray", **changes}))


def test_application_sets_fixed_replicas_or_autoscaling_and_room_for_a_batch():
    fixed = application(ServeOptions(ref="mnist-mlp@sha256:ab", engine="ray", replicas=3, max_batch=16))._bound_deployment
    assert fixed.num_replicas == 3 and fixed.max_ongoing_requests == 32 and fixed.name == "mnist-mlp"
    scaled = application(ServeOptions(ref="mnist-mlp:1", engine="ray", min_replicas=0, max_replicas=4, target_ongoing=3))._bound_deployment
    config = scaled._deployment_config.autoscaling_config
    assert (config.min_replicas, config.max_replicas, config.target_ongoing_requests) == (0, 4, 3)
