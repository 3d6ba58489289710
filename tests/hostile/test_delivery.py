"""Crafted bundles delivered as an attacker would: a file:// share (pull) and an `import` tarball.

Pulling or importing runs nothing and damages nothing; a manifest that is
malformed (duplicate, escaping or absolute filepaths, an index where a manifest
belongs, a foreign config, a look-alike name) is refused at once in one line
and leaves nothing behind; what was accepted is then refused by ``load``.
The registry delivery is in ``test_slow_doors.py``.
"""

from __future__ import annotations

import os

import pytest

import nbmodelpack

from .craft import REFUSE
from .deliver import write_tar
from .doors import PARSE_REFUSED, SMALL_CASES, call_api, call_cli, judge

pytestmark = pytest.mark.slow  # a pull or an import per case: about 30 s in all


def _pulled_then_loaded(victim, case, outcome) -> list[str]:
    bad = judge(outcome, must_fail=case.case in PARSE_REFUSED)
    bad += victim.problems()
    if outcome.ok:
        load = call_api("load", lambda: nbmodelpack.load(f"{case.repo}:{case.tag}"))
        bad += judge(load, must_fail=case.expect == REFUSE)
        bad += [f"after load: {p}" for p in victim.problems()]
    else:
        staging = victim.store / "staging"
        left = [p.name for p in staging.iterdir()] if staging.exists() else []
        left += [p.name for p in victim.store.iterdir() if p.name.startswith(".pull-")]
        if left:
            bad.append(f"a refused pull left staging behind: {left}")
    return bad


@pytest.mark.parametrize("name", [*SMALL_CASES, "symlink-blob", "import-shadow"])
def test_pull_from_a_share_runs_nothing_and_keeps_the_store_whole(victim, cases, share, name):
    case = cases[name]
    outcome = call_api("pull", lambda: nbmodelpack.pull(f"share/{case.repo}:{case.tag}"))
    bad = _pulled_then_loaded(victim, case, outcome)
    for blob in (victim.store / "blobs" / "sha256").iterdir():
        if blob.is_symlink():
            bad.append(f"the store holds a symlink {blob.name[:12]} -> {os.readlink(blob)}")
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)


@pytest.mark.parametrize("name", [*SMALL_CASES, "import-shadow"])
def test_import_of_a_tarball_runs_nothing_and_keeps_the_store_whole(victim, cases, tmp_path, name):
    case = cases[name]
    workdir = tmp_path / "in"
    workdir.mkdir()
    tar = write_tar(workdir / f"{name}.tar", case, workdir)
    victim.before = victim.snapshot()
    outcome = call_cli("import", ["import", str(tar)])
    bad = _pulled_then_loaded(victim, case, outcome) if not outcome.ok else []
    if outcome.ok:
        bad += judge(outcome, must_fail=case.case in PARSE_REFUSED) + victim.problems()
        bundles = [i for i in nbmodelpack.ls() if i.digest not in victim.good_blobs]
        for info in bundles:
            load = call_api("load", lambda info=info: nbmodelpack.load(info.ref))
            bad += judge(load, must_fail=case.expect == REFUSE)
            bad += [f"after load: {p}" for p in victim.problems()]
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)


def test_import_of_a_file_that_is_not_a_tar_is_one_line(victim, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 100)
    victim.before = victim.snapshot()  # the junk file is the test's own input
    outcome = call_cli("import", ["import", str(junk)])
    assert judge(outcome, must_fail=True) == []
    assert victim.problems() == []


def _no_link(*args: object, **kwargs: object) -> None:
    raise OSError(18, "Invalid cross-device link")


def _sign_good(victim) -> str:
    nbmodelpack.keygen_signing()
    signed = nbmodelpack.sign("good:1")
    from nbmodelpack.config import edit_config

    with edit_config() as cfg:
        cfg["trust"] = {"require_signature": True, "keys": [str(victim.home / "keys" / "signing.pem.pub")]}
    victim.settle(signed.ref)
    return signed.ref


@pytest.mark.parametrize("links", ["hard links", "no hard links"])
def test_refused_duplicate_filepath_pull_leaves_a_signed_bundle_intact(victim, cases, monkeypatch, links):
    signed = _sign_good(victim)
    signed_blobs = {p: p.read_bytes() for p in (victim.store / "blobs" / "sha256").iterdir()}
    case = cases["dup-architecture"]
    with monkeypatch.context() as m:
        if links == "no hard links":  # as on a filesystem without them (or a temp dir on another device)
            m.setattr(os, "link", _no_link)
        outcome = call_api("pull", lambda: nbmodelpack.pull(f"share/{case.repo}:{case.tag}"))
    bad = judge(outcome, must_fail=True) + victim.problems()
    for path, data in signed_blobs.items():
        if path.read_bytes() != data:
            bad.append(f"blob {path.name[:12]} changed")
    assert nbmodelpack.fsck() == []
    loaded = nbmodelpack.load(signed)
    assert all(loaded.state_dict()[k].equal(v) for k, v in victim.bases.weights.items())
    assert not bad, "\n".join(bad)


def test_verify_of_a_duplicate_filepath_bundle_leaves_a_signed_bundle_intact(victim, cases):
    signed = _sign_good(victim)
    case = cases["dup-architecture"]
    from .deliver import plant

    plant(victim.store, case)
    outcome = call_cli("verify", ["verify", case.ref])
    bad = judge(outcome, must_fail=False) + victim.problems()
    assert nbmodelpack.fsck() == [] or all(p.digest == case.digest for p in nbmodelpack.fsck())
    assert nbmodelpack.load(signed) is not None
    assert not bad, "\n".join(bad)


def test_gc_removes_staging_that_killed_pulls_left_behind(victim):
    # What a pull or import killed with -9 leaves: its staging layout (and the legacy .pull-* name).
    import time
    import uuid

    left = [victim.store / "staging" / f"pull-{uuid.uuid4().hex}", victim.store / f".pull-{uuid.uuid4().hex}"]
    old = time.time() - 7 * 24 * 3600
    for d in left:
        (d / "blobs" / "sha256").mkdir(parents=True)
        (d / "blobs" / "sha256" / "ab").write_bytes(b"x" * 4096)
        for p in [d, *d.rglob("*")]:
            os.utime(p, (old, old))
    fresh = victim.store / "staging" / f"import-{uuid.uuid4().hex}"
    fresh.mkdir(parents=True)  # a pull still running in another process: kept
    nbmodelpack.gc(grace_seconds=3600)
    assert [d.name for d in left if d.exists()] == []
    assert fresh.exists()
    assert victim.problems() == []
