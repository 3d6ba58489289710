"""An OCI registry as a :class:`~.transport.Transport`, over :class:`~.registry.RegistryClient`.

- manifests are sent as the exact local bytes, their digest checked against
  ``Docker-Content-Digest``; fetched ones are read under 4 MiB and re-hashed;
- blobs: ``HEAD`` (skip what exists), cross-repository ``mount``, then upload
  sessions (:mod:`.uploads`: one ``PUT`` for a small blob, ``PATCH`` chunks with
  ``Content-Range`` for a large one, resumed at the registry's ``Range``);
  downloads stop at the descriptor's size;
- tags and the catalog follow ``Link`` pagination under page and count caps.

Example:
    >>> t = RegistryTransport(RegistryClient("127.0.0.1:5000", insecure=True))  # doctest: +SKIP
    >>> t.tags("team/mnist-mlp")  # doctest: +SKIP
    ['1', 'latest']
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urljoin

import requests

from ..bundle import mediatypes as mt
from ..bundle.manifest import Descriptor
from ..errors import AuthError, BundleNotFound, IntegrityError, RemoteError
from .registry import RegistryClient, check_encoding, raw_reader, read_body
from .transport import (
    LISTING_CAP,
    LISTING_MAX,
    MANIFEST_CAP,
    PAGES_MAX,
    OnBytes,
    loads_answer,
    read_exactly,
    str_list,
)
from .uploads import DEFAULT_CHUNK, FileRange, put_resumable


def chunk_size() -> int:
    """Blobs larger than this go up in ``PATCH`` chunks of this size (``NBMODELPACK_CHUNK_SIZE``).

    Example:
        >>> chunk_size() >= 1
        True
    """
    text = os.environ.get("NBMODELPACK_CHUNK_SIZE", "")
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_CHUNK


class RegistryTransport:
    """One registry host as a remote (see the module docstring); also the :class:`~.uploads.UploadSessions` of it."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self.name = client.remote_name
        self.site = client.host

    def where(self, repo: str) -> str:
        return f"{self.client.host}/{repo}"

    def ping(self) -> None:
        self.client.ping()

    # ---- manifests and listings ------------------------------------------------------------
    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        resp = self.client.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=f"repository:{repo}:pull",
            headers={"Accept": f"{mt.MANIFEST}, {mt.INDEX}"},
            allow=(404,),
        )
        if resp.status_code == 404:
            resp.close()
            raise BundleNotFound(f"{self.name}/{repo}:{reference}", hint=f"`modelpack ls --remote {self.name}` lists what is there")
        claimed = reference if reference.startswith("sha256:") else resp.headers.get("Docker-Content-Digest", "")
        raw = read_body(resp, MANIFEST_CAP, "a manifest", self.where(repo))
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        if claimed and claimed != actual:
            raise IntegrityError(
                f"manifest of {repo}:{reference} from {self.client.host} has digest {actual[:19]}…, expected {claimed[:19]}…",
                hint="the registry's copy is damaged; nothing was written",
            )
        return raw, actual

    def put_manifest(self, repo: str, raw: bytes, digest: str, tags: list[str]) -> None:
        for tag in tags:
            resp = self.client.request(
                "PUT",
                f"/v2/{repo}/manifests/{tag}",
                scope=f"repository:{repo}:pull,push",
                headers={"Content-Type": mt.MANIFEST},
                data=raw,
                ok=(200, 201),
            )
            resp.close()
            got = resp.headers.get("Docker-Content-Digest")
            if got and got != digest:
                raise IntegrityError(f"{self.client.host} stored the manifest as {got[:19]}…, expected {digest[:19]}…", hint="the registry rewrote the manifest; use another registry")

    def _pages(self, url: str, key: str, scope: str, what: str) -> list[str] | None:
        """Every name of a paginated listing; None on 404/405 (no such repository, or no catalog)."""
        out: list[str] = []
        seen: set[str] = set()
        for _ in range(PAGES_MAX):
            resp = self.client.request("GET", url, scope=scope, allow=(404, 405))
            if resp.status_code in (404, 405):
                resp.close()
                return None
            following = self.client.next_link(resp)
            doc = loads_answer(read_body(resp, LISTING_CAP, what, self.client.host), what=what, where=self.client.host)
            out += str_list(doc, key, what=what, where=self.client.host)
            if len(out) > LISTING_MAX:
                raise RemoteError(f"{what} from {self.client.host} lists more than {LISTING_MAX} names", hint="the remote is not a well-behaved registry")
            if not following or following in seen:
                return out
            seen.add(following)
            url = following
        raise RemoteError(f"{what} from {self.client.host} has more than {PAGES_MAX} pages", hint="the remote is not a well-behaved registry")

    def tags(self, repo: str) -> list[str]:
        return self._pages(f"/v2/{repo}/tags/list?n=1000", "tags", f"repository:{repo}:pull", "a tag list") or []

    def repositories(self) -> list[str] | None:
        try:
            return self._pages("/v2/_catalog?n=1000", "repositories", "registry:catalog:*", "a catalog page")
        except AuthError:
            return None  # the catalog is often closed to ordinary logins

    # ---- blobs -------------------------------------------------------------------------------
    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self.client.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull,push", allow=(404,))
        resp.close()
        return resp.status_code == 200

    def mount(self, repo: str, digest: str, from_repo: str) -> bool:
        query = urlencode({"mount": digest, "from": from_repo})
        scope = f"repository:{repo}:pull,push"
        resp = self.client.request("POST", f"/v2/{repo}/blobs/uploads/?{query}", scope=scope, ok=(201, 202))
        resp.close()
        if resp.status_code == 201:
            return True
        # 202: the registry opened a normal upload instead; drop it.
        location = resp.headers.get("Location")
        if location:
            self.client.request("DELETE", self._absolute(location), scope=scope, ok=(204,), allow=(404, 405)).close()
        return False

    def get_blob(self, repo: str, desc: Descriptor, on_bytes: OnBytes) -> Iterator[bytes]:
        what = desc.filepath or "config"
        resp = self.client.request("GET", f"/v2/{repo}/blobs/{desc.digest}", scope=f"repository:{repo}:pull", allow=(404,))
        if resp.status_code == 404:
            resp.close()
            raise IntegrityError(f"{what} ({desc.digest[:19]}…) is missing on {self.where(repo)}", hint="the registry's copy is damaged; publish the version again")
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) != desc.size:
            resp.close()
            raise IntegrityError(f"{what} from {self.where(repo)} is {declared} bytes, its descriptor says {desc.size}", hint="the registry's copy is damaged or hostile; nothing was written")
        check_encoding(resp, self.client.host)

        def chunks() -> Iterator[bytes]:
            try:
                yield from read_exactly(raw_reader(resp, self.client.host), desc.size, what=what, where=self.where(repo), on_bytes=on_bytes)
            finally:
                resp.close()

        return chunks()

    def put_blob(self, repo: str, desc: Descriptor, path: Path, on_bytes: OnBytes) -> int:
        return put_resumable(self, repo, desc, path, chunk=chunk_size(), on_bytes=on_bytes)

    # ---- upload sessions (see .uploads) -----------------------------------------------------
    def _absolute(self, location: str) -> str:
        return urljoin(self.client.base + "/", location)

    def _location(self, resp: requests.Response, fallback: str | None) -> str:
        location = resp.headers.get("Location")
        if not location:
            if fallback is None:
                raise RemoteError(f"{self.client.host} sent no upload location", hint="the remote is not a well-behaved registry")
            return fallback
        return self._absolute(location)

    def start_upload(self, repo: str) -> str:
        resp = self.client.request("POST", f"/v2/{repo}/blobs/uploads/", scope=f"repository:{repo}:pull,push", ok=(202,))
        resp.close()
        return self._location(resp, None)

    def upload_offset(self, repo: str, location: str) -> tuple[str, int] | None:
        resp = self.client.request("GET", location, scope=f"repository:{repo}:pull,push", ok=(204,), allow=(400, 404, 416))
        resp.close()
        if resp.status_code != 204:
            return None
        return self._location(resp, location), _range_end(resp.headers.get("Range", "")) + 1

    def append(self, repo: str, location: str, offset: int, data: FileRange) -> str:
        resp = self.client.request(
            "PATCH",
            location,
            scope=f"repository:{repo}:pull,push",
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(data) - 1}",
                "Content-Length": str(len(data)),
            },
            data=data,
            ok=(202,),
        )
        resp.close()
        return self._location(resp, location)

    def finish(self, repo: str, location: str, digest: str, data: FileRange | bytes) -> None:
        sep = "&" if "?" in location else "?"
        resp = self.client.request(
            "PUT",
            f"{location}{sep}{urlencode({'digest': digest})}",
            scope=f"repository:{repo}:pull,push",
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
            data=data,
            ok=(201, 204),
            allow=(400,),
        )
        if resp.status_code != 400:
            resp.close()
            return
        error = self.client._error(resp, "PUT", location)
        if "DIGEST_INVALID" in error.message:  # the registry hashed what it received: it is not the blob we named
            raise IntegrityError(f"{self.client.host} received other bytes than blob {digest[:19]}…", hint="the local copy changed since it was stored")
        raise error


def _range_end(header: str) -> int:
    # "0-1023" -> 1023; distribution answers "0--1" (or nothing) for an empty upload.
    m = re.match(r"^(?:bytes=)?0-(\d+)$", header.strip())
    return int(m.group(1)) if m else -1
