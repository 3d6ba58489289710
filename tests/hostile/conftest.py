"""Session fixtures of the hostile suite: genuine bases, crafted cases, a share, a victim per test.

Cost: one pack of two tiny bundles and one crafting pass per session (the 1 GiB
zstd bomb compresses in about a second; the 200 MiB manifest is built once and
written only by the bomb tests). Each test copies a template victim store
(a few files) instead of packing again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import nbmodelpack

from .craft import SENTINEL_ENV, Base, Crafted, craft_all, read_base, symlink_case
from .deliver import sentinels_present, tree_snapshot, write_layout


@dataclass
class Bases:
    root: Path  # a store holding good:1 (Linear) and exp:1 (exported local class)
    linear: Base
    exported: Base
    weights: dict[str, torch.Tensor]  # good:1's weights, as packed


@pytest.fixture(scope="session")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The directory every payload would write into; exported so subprocesses and side-effect modules see it."""
    d = tmp_path_factory.mktemp("sentinels")
    old = os.environ.get(SENTINEL_ENV)
    os.environ[SENTINEL_ENV] = str(d)
    yield d
    if old is None:
        os.environ.pop(SENTINEL_ENV, None)
    else:
        os.environ[SENTINEL_ENV] = old


@pytest.fixture(scope="session")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Bases:
    root = tmp_path_factory.mktemp("factory") / "store"
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 4)
    nbmodelpack.pack(linear, "good", example=torch.zeros(1, 8), store=str(root))

    def local_net() -> torch.nn.Module:
        class Net(torch.nn.Module):  # a local class: captured as a torch.export graph
            def __init__(self) -> None:
                super().__init__()
                self.fc = torch.nn.Linear(8, 4)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.relu(self.fc(x))

        return Net()

    nbmodelpack.pack(local_net(), "exp", example=torch.zeros(1, 8), store=str(root))
    weights = {k: v.detach().clone() for k, v in linear.state_dict().items()}
    return Bases(root, read_base(root, "good:1"), read_base(root, "exp:1"), weights)


@pytest.fixture(scope="session")
def cases(bases: Bases, sentinels: Path) -> dict[str, Crafted]:
    return {c.case: c for c in craft_all(bases.linear, bases.exported, sentinels)}


@pytest.fixture(scope="session")
def share(tmp_path_factory: pytest.TempPathFactory, cases: dict[str, Crafted], bases: Bases) -> Path:
    """A file:// share (OCI layout) holding every small case and a symlinked-blob one."""
    root = tmp_path_factory.mktemp("share")
    outside = tmp_path_factory.mktemp("outside") / "weights.bin"
    small = [c for c in cases.values() if not c.big]
    cases["symlink-blob"] = symlink_case(bases.linear, outside)
    return write_layout(root / "layout", [*small, cases["symlink-blob"]])


class Victim:
    """The victim's home: a store that already holds good:1, a share remote, and the checks."""

    def __init__(self, home: Path, tmp: Path, bases: Bases, sentinels: Path, share: Path) -> None:
        self.home, self.tmp, self.bases, self.sentinels = home, tmp, bases, sentinels
        self.store = home / "store"
        shutil.copytree(bases.root, self.store)
        nbmodelpack.remote.add_remote("share", share.as_uri())
        self.out = tmp / "out"  # door outputs (export targets) go here
        self.out.mkdir()
        self.settle("good:1")

    def settle(self, good_ref: str) -> None:
        """Take what the store holds now as the good state: ``good_ref`` must keep loading, its blobs unchanged."""
        self.good_ref = good_ref
        self.good_blobs = {"sha256:" + p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (self.store / "blobs" / "sha256").iterdir()}
        self.before = self.snapshot()

    def _good_paths(self) -> dict[str, Path]:
        return {d: self.store / "blobs" / "sha256" / d.split(":", 1)[1] for d in self.good_blobs}

    def _outside_store(self, p: Path) -> bool:
        # The store, door outputs, and the record of running servers (serve's own bookkeeping).
        return p.is_relative_to(self.store) or p.is_relative_to(self.out) or p.is_relative_to(self.home / "servers")

    def snapshot(self) -> dict[str, tuple[int, str]]:
        """Every file of the test's tmp dir (home, config, keys) outside the store, door outputs and server records."""
        return tree_snapshot(self.tmp, skip=self._outside_store)

    def problems(self) -> list[str]:
        """What a door broke: payload sentinels, the good bundle, files outside the store."""
        out = [f"payload ran: sentinel {s}" for s in sentinels_present(self.sentinels)]
        for digest, path in self._good_paths().items():
            if path.is_symlink() or not path.is_file():
                out.append(f"good blob {digest[:19]} is gone or a link")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != self.good_blobs[digest]:
                out.append(f"good blob {digest[:19]} was changed")
        bad = [p for p in nbmodelpack.fsck() if p.digest in self.good_blobs]
        out += [f"fsck: {p}" for p in bad]
        try:
            loaded = nbmodelpack.load(self.good_ref)
            same = all(torch.equal(loaded.state_dict()[k], v) for k, v in self.bases.weights.items())
            if not same:
                out.append(f"{self.good_ref} loads with different weights")
        except Exception as exc:  # any failure to load the good bundle is damage
            out.append(f"{self.good_ref} no longer loads: {type(exc).__name__}: {exc}")
        after = self.snapshot()
        changed = sorted(k for k in set(after) | set(self.before) if after.get(k) != self.before.get(k))
        out += [f"changed outside the store: {k}" for k in changed[:5]]
        return out

    def clear_sentinels(self) -> None:
        # An import side effect fires once per process: forget the modules so the next door can trip it again.
        for mod in ("hostile.sidefx_import", "hostile.sidefx_class"):
            sys.modules.pop(mod, None)
        for p in self.sentinels.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()


@pytest.fixture
def victim(home: Path, tmp_path: Path, bases: Bases, sentinels: Path, share: Path) -> Iterator[Victim]:
    v = Victim(home, tmp_path, bases, sentinels, share)
    v.clear_sentinels()  # one case's run must not blame the next
    yield v
    v.clear_sentinels()
