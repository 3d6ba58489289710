"""Bombs end in one line with peak memory under 100 MB above baseline.

A 1 GiB zstd bomb on the weight layer (about 32 KB on disk), a 200 MiB
manifest in a share, and a registry that streams 1 GiB for a 1 KB descriptor
(or 200 MiB for a manifest). Each door runs in a fresh process that measures
its own peak (``bombs.peak_of``).
"""

from __future__ import annotations

import pytest

from .bombs import HostileRegistry, lying_manifest, peak_of
from .craft import MIB
from .deliver import plant, write_layout

pytestmark = pytest.mark.slow
LIMIT_MB = 100


def _one_line_refusal(result: dict, what: str) -> None:
    assert not result["crash"], f"{what} crashed: {result}"
    assert not result["ok"], f"{what} was not refused"
    assert "\n" not in result["error"] and result["error"], result["error"][:300]
    assert result["added_mb"] < LIMIT_MB, f"{what} took {result['added_mb']:.0f} MB above baseline"


@pytest.mark.parametrize("door", ["load", "compress", "decrypt"])
def test_a_zstd_bomb_on_the_weight_layer_is_refused_in_one_line_within_100_mb(victim, cases, door):
    case = cases["zstd-bomb"]
    assert sum(len(b) for b in case.blobs.values() if isinstance(b, bytes)) < 2 * MIB  # a small file on disk
    plant(victim.store, case)
    call = {
        "load": f"nbmodelpack.load({case.ref!r})",
        "compress": f"nbmodelpack.compress({case.ref!r}, quantize='fp16')",
        "decrypt": f"nbmodelpack.decrypt({case.ref!r})",
    }[door]
    result = peak_of(call)
    _one_line_refusal(result, door)
    assert victim.problems() == []


def test_pulling_a_zstd_bomb_from_a_share_then_loading_it_stays_within_100_mb(victim, cases, tmp_path):
    case = cases["zstd-bomb"]
    share = write_layout(tmp_path / "bomb-share", [case])
    import nbmodelpack

    nbmodelpack.remote.add_remote("bombs", share.as_uri())
    victim.before = victim.snapshot()  # the share and its remote are the test's own setup, not a door's doing
    result = peak_of(f"nbmodelpack.pull('bombs/{case.ref}'); nbmodelpack.load({case.ref!r})")
    _one_line_refusal(result, "pull + load")
    assert victim.problems() == []


def test_a_200_mib_manifest_in_a_share_is_refused_in_one_line_within_100_mb(victim, cases, tmp_path):
    case = cases["huge-manifest"]
    assert len(case.manifest) > 200 * MIB
    share = write_layout(tmp_path / "huge-share", [case])
    import nbmodelpack

    nbmodelpack.remote.add_remote("huge", share.as_uri())
    victim.before = victim.snapshot()  # the share and its remote are the test's own setup, not a door's doing
    result = peak_of(f"nbmodelpack.pull('huge/{case.ref}')")
    _one_line_refusal(result, "pull")
    listing = peak_of("nbmodelpack.list_remote('huge')")
    assert not listing["crash"] and listing["added_mb"] < LIMIT_MB, listing
    assert victim.problems() == []


@pytest.mark.parametrize(
    ("tag", "where", "what"),
    [("1", "/blobs/", "a 1 KB blob"), ("huge", "/manifests/", "a manifest (cap: 4 MiB)")],
    ids=["1-gib-for-a-1-kb-descriptor", "200-mib-manifest"],
)
def test_a_registry_streaming_without_end_is_cut_off_within_100_mb(victim, bases, tag, where, what):
    manifest, config = lying_manifest(bases.linear)
    with HostileRegistry(manifest, config) as reg:
        result = peak_of(f"nbmodelpack.pull('{reg.host}/evil/bomb:{tag}')")
        sent = max((n for p, n in reg.sent.items() if where in p), default=0)
    _one_line_refusal(result, "pull")
    assert sent < 16 * MIB, f"the client read on to {sent / MIB:.0f} MiB of {what}"
    assert victim.problems() == []
