"""Shared fixtures: every test gets its own NBMODELPACK_HOME and no progress bars.

Markers by place (so ``make test-fast`` = ``-m "not e2e and not slow"`` needs no list of
files): everything under ``tests/e2e/`` is ``e2e``; a ``test_notebook_*`` file runs a
notebook on a real kernel and is ``notebook`` and ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
E2E = TESTS / "e2e"
# The magic's background import of torch.export (see notebook.magics) stays out of the test
# process, where other tests export at the same time; the test of it turns it back on.
os.environ.setdefault("NBMODELPACK_NO_WARMUP", "1")

# Tests that take 1.5 s or more here (fresh Python processes importing torch, concurrent or
# killed packs, ResNet-18): `make test` runs them, `make test-fast` does not.
SLOW = {
    "test_cli.py::test_a_broken_config_toml_is_one_line_and_left_as_it_was",
    "test_cli.py::test_import_pth_via_cli",
    "test_compress.py::test_child_records_recipe_zstd_layer_and_metrics_on_its_card",
    "test_compress.py::test_cli_compress_prints_report_and_refuses_bad_scheme",
    "test_compress.py::test_each_variant_loads_in_a_fresh_process_like_the_compressed_model",
    "test_compress.py::test_int8_dynamic_kernel_is_opt_in_and_close_to_the_weight_only_default",
    "test_int8_paths.py::test_compress_report_lists_what_int8_left_float_in_text_html_and_card",
    "test_compress.py::test_notebook_verb_evaluates_on_a_notebook_variable",
    "test_crypto.py::test_a_passphrase_passed_as_a_plain_string_is_not_echoed",
    "test_crypto.py::test_bad_keys_and_damaged_or_swapped_layers_are_refused_naming_the_file_with_no_plaintext_on_disk",
    "test_crypto.py::test_cli_encrypt_with_passphrase_from_env_then_decrypt",
    "test_crypto.py::test_passphrase_encryption_round_trips_and_a_wrong_passphrase_is_refused",
    "test_labapi.py::test_serve_shows_a_serving_badge_and_stop_removes_it",
    "test_pack_load.py::test_class_defined_in_main_loads_in_a_process_that_never_saw_it",
    "test_pack_load.py::test_cnn_with_batchnorm_buffers_round_trips_exactly",
    "test_pack_load.py::test_mlp_round_trip_is_exact_in_a_fresh_process",
    "test_pack_load.py::test_resnet18_round_trips_by_factory_name",
    "test_pack_load.py::test_source_strategy_needs_trust_code_to_pack_and_to_load",
    "test_pack_load.py::test_tied_weights_are_stored_once_and_stay_tied",
    "test_signing.py::test_cli_sign_and_verify_with_default_keys",
    "test_signing.py::test_model_signing_cli_verifies_the_exported_files_and_catches_tampering",
    "test_store_safety.py::test_disk_full_during_pack_leaves_nothing_and_says_so",
    "test_store_safety.py::test_eight_concurrent_packs_give_eight_versions",
    "test_store_safety.py::test_kill_9_during_pack_leaves_no_half_version",
    "test_magics.py::test_load_opens_an_encrypted_bundle_with_identity_from_a_file_or_a_passphrase",
    "test_pt2_allowlist.py::test_each_crafted_pt2_runs_code_in_torch_but_is_refused_by_load",
    "test_payloads_are_live.py::test_every_payload_runs_when_a_naive_loader_meets_it",
    "test_signing.py::test_serve_refuses_an_unsigned_bundle_under_the_trust_policy",
    "test_labapi.py::test_serving_a_bundle_that_cannot_be_loaded_fails_its_job_in_one_line",
    "test_labapi.py::test_serving_an_encrypted_bundle_with_the_key_file_the_sidebar_names",
    "test_finetune.py::test_finetune_replaces_the_head_freezes_by_pattern_and_the_child_loads_as_its_class",
    "test_architecture_trust.py::test_cli_compress_of_a_hostile_target_is_one_line_naming_trust_code_and_config",
    "test_trainable_loads.py::test_recurrent_graph_takes_other_sequence_lengths_and_trains",
    "test_magics.py::test_the_serve_widget_follows_its_server_and_predict_answers_in_one_line",
    "test_shards.py::test_a_big_model_is_checked_without_reading_its_weights_back_or_running_it",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path
        if E2E in path.parents:
            item.add_marker(pytest.mark.e2e)
        if f"{path.name}::{getattr(item, 'originalname', item.name)}" in SLOW:
            item.add_marker(pytest.mark.slow)
        if path.name.startswith("test_notebook"):
            item.add_marker(pytest.mark.notebook)
            item.add_marker(pytest.mark.slow)


def trust_test_models(home: Path) -> None:
    """Let ``load`` import the classes of tests/models.py, as a user lists their own modules in config.toml."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('[trust]\nmodules = ["models"]\n')


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh nbmodelpack home (store, config, keys) for each test; its config trusts tests/models.py."""
    h = tmp_path / "mphome"
    trust_test_models(h)
    monkeypatch.setenv("NBMODELPACK_HOME", str(h))
    monkeypatch.setenv("NBMODELPACK_NO_PROGRESS", "1")
    monkeypatch.setenv("NBMODELPACK_MNIST", str(ROOT / "notebooks" / "data"))
    return h


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a fresh Python process that can import the tests' model classes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@pytest.fixture
def run_py():
    """Run Python code in a fresh process (that never saw the test's classes); return stdout."""

    def run(code: str, *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    return run


@pytest.fixture
def cli():
    """Run the `modelpack` CLI in a subprocess; return the CompletedProcess."""

    def run(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "nbmodelpack", *args], env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"modelpack {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    return run


# ---- the REST tests' Jupyter server (pytest-jupyter) and JSON client ---------------------------
@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"nbmodelpack.labapi": True}}}


@pytest.fixture
def api(jp_fetch):
    """Call /nbmodelpack/api/...; return (status, json) without raising on 4xx/5xx."""

    async def call(method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        if method == "POST":
            kwargs["body"] = json.dumps(body if body is not None else {}) if not isinstance(body, str) else body
        try:
            response = await jp_fetch("nbmodelpack", "api", *path.split("/"), method=method, **kwargs)
        except tornado.httpclient.HTTPClientError as exc:
            assert exc.response is not None
            return exc.code, json.loads(exc.response.body or b"null")
        return response.code, json.loads(response.body) if response.body else None

    return call
