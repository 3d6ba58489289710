"""Remembering that a bundle passed the trust policy, so each load does not re-verify its signature.

Verifying a signature re-hashes every file of the bundle (through ``model_signing``).
After a successful check under a trust policy, the store keeps a note (MAC'd like the
blob records, see :mod:`nbmodelpack.store.records`) keyed by the manifest digest that
says: under the policy with this fingerprint (the trusted public keys), this manifest's
files verified. The manifest names each file by digest, so the outcome holds while
every covered blob is intact, which its verification record says without hashing.
The note is used only while the policy is the same and every covered blob's record
matches its file; any change, or ``verify=True``, verifies again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..store import StoredBundle

NOTE_KIND = "signatures"


def policy_fingerprint(pems: list[tuple[str, bytes]]) -> str:
    """One digest for a set of trusted public keys (order and labels do not matter).

    Example:
        >>> policy_fingerprint([("a", b"K1"), ("b", b"K2")]) == policy_fingerprint([("c", b"K2"), ("d", b"K1")])
        True
    """
    h = hashlib.sha256()
    for pem in sorted(pem for _, pem in pems):
        h.update(hashlib.sha256(pem).digest())
    return "sha256:" + h.hexdigest()


def intact(bundle: StoredBundle) -> bool:
    """Whether every blob the signature covers is unchanged since this user hashed it (its record matches)."""
    return all(bundle.store.blob_verified(desc.digest) for desc in bundle.manifest.layers)


def recall(bundle: StoredBundle, policy: str) -> dict[str, Any] | None:
    """The note of an earlier successful check, if the policy is the same and every covered blob is intact."""
    records = bundle.store.blobs.records
    if records is None:
        return None
    note = records.read_note(NOTE_KIND, bundle.digest.split(":", 1)[1])
    if note is None or note.get("policy") != policy:
        return None
    return note if intact(bundle) else None


def remember(bundle: StoredBundle, policy: str, outcome: dict[str, Any]) -> None:
    """Keep the note of a successful check (only when every covered blob is intact: its content is its digest)."""
    records = bundle.store.blobs.records
    if records is not None and intact(bundle):
        records.write_note(NOTE_KIND, bundle.digest.split(":", 1)[1], {**outcome, "policy": policy})


def forget(bundle: StoredBundle) -> None:
    """Drop the note (the bundle failed a check)."""
    records = bundle.store.blobs.records
    if records is not None:
        records.drop_note(NOTE_KIND, bundle.digest.split(":", 1)[1])
