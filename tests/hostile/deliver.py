"""Deliver crafted bundles as an attacker would, and snapshot what a door may have changed.

``write_layout`` makes an OCI layout directory (a ``file://`` share, or a
directory to ``import``), ``write_tar`` an import tarball, ``push_to_registry``
pushes with plain ``requests`` (not our client), and ``plant`` puts a case
straight into a victim store as if an older version had accepted it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbmodelpack.bundle import mediatypes as mt

from .craft import MIB, Crafted


def _write_blob(blobs_dir: Path, digest: str, data: bytes | Path) -> None:
    path = blobs_dir / digest.split(":", 1)[1]
    if path.exists() or path.is_symlink():
        return
    if isinstance(data, Path):
        shutil.copyfile(data, path)
    else:
        path.write_bytes(data)


def index_entries(c: Crafted) -> list[dict[str, Any]]:
    return [
        {"mediaType": c.index_media_type, "digest": c.digest, "size": len(c.manifest), "annotations": {mt.REF_NAME: f"{c.repo}:{t}"}}
        for t in [c.tag, *c.extra_tags]
    ]


def write_layout(root: Path, cases: list[Crafted]) -> Path:
    """An OCI image layout holding ``cases`` (a file:// share, or a directory for import)."""
    blobs_dir = root / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entries: list[dict[str, Any]] = []
    for c in cases:
        for digest, target in c.symlinks.items():
            link = blobs_dir / digest.split(":", 1)[1]
            if not link.exists():
                link.symlink_to(target)
        for digest, data in c.blobs.items():
            _write_blob(blobs_dir, digest, data)
        _write_blob(blobs_dir, c.digest, c.manifest)
        entries += index_entries(c)
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": mt.INDEX, "manifests": entries}))
    return root


def write_tar(path: Path, c: Crafted, workdir: Path) -> Path:
    """An OCI layout tar of one case (what ``modelpack import`` takes)."""
    layout = write_layout(workdir / f"layout-{c.case}", [c])
    with tarfile.open(path, "w") as tar:
        for item in sorted(layout.rglob("*")):
            tar.add(item, arcname=str(item.relative_to(layout)), recursive=False)
    return path


def plant(store_root: Path, c: Crafted) -> None:
    """Put a crafted bundle straight into a victim store's layout (blobs + index entries)."""
    blobs_dir = store_root / "blobs" / "sha256"
    for digest, data in c.blobs.items():
        _write_blob(blobs_dir, digest, data)
    _write_blob(blobs_dir, c.digest, c.manifest)
    index = store_root / "index.json"
    doc = json.loads(index.read_text())
    doc["manifests"] = [*doc.get("manifests", []), *index_entries(c)]
    index.write_text(json.dumps(doc, indent=1))


def push_to_registry(base_url: str, auth: tuple[str, str], repo: str, c: Crafted) -> None:
    """Push a crafted bundle with plain ``requests`` (monolithic blob uploads, then the manifest)."""
    import requests

    session = requests.Session()
    session.auth = auth
    for digest, data in c.blobs.items():
        body = data.read_bytes() if isinstance(data, Path) else data
        if session.head(f"{base_url}/v2/{repo}/blobs/{digest}", timeout=30).status_code == 200:
            continue
        start = session.post(f"{base_url}/v2/{repo}/blobs/uploads/", timeout=30)
        start.raise_for_status()
        location = start.headers["Location"]
        url = location if location.startswith("http") else base_url + location
        done = session.put(url, params={"digest": digest}, data=body, headers={"Content-Type": "application/octet-stream"}, timeout=120)
        done.raise_for_status()
    for t in [c.tag, *c.extra_tags[:20]]:
        r = session.put(f"{base_url}/v2/{repo}/manifests/{t}", data=c.manifest, headers={"Content-Type": c.index_media_type}, timeout=60)
        r.raise_for_status()


def sentinels_present(sentinels: Path) -> list[str]:
    return sorted(p.name for p in sentinels.iterdir()) if sentinels.exists() else []


def tree_snapshot(root: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, tuple[int, str]]:
    """``relative path -> (size, sha256)`` of every regular file (and symlink target) under ``root``."""
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(root.rglob("*")) if root.exists() else []:
        if skip(p):
            continue
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = (-1, os.readlink(p))
        elif p.is_file():
            out[rel] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest() if p.stat().st_size < 64 * MIB else str(p.stat().st_mtime_ns))
    return out
