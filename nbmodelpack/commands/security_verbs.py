"""Verbs for keys, encryption and signatures: keygen, encrypt, decrypt, sign, verify."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import api, paths
from ..bundle.info import BundleInfo
from ..crypto.keys import DEFAULT_IDENTITY_FILE, next_to_notebooks, own_recipient
from ..errors import UsageError
from .framework import Context, arg, verb
from .results import Text
from .secrets import IDENTITY_ARGS, ask_passphrase, identity_of


@verb(
    "keygen",
    "make an age identity (--age) or an ECDSA P-256 signing key pair (--signing)",
    arg("--age", nargs="?", const="", metavar="OUT", help="identity file (default: keys/age-identity.txt)"),
    arg("--signing", nargs="?", const="", metavar="OUT", help="private key PEM; public key goes to OUT.pub (default: keys/signing.pem)"),
    arg("--force", action="store_true", help="overwrite existing key files"),
)
def keygen_verb(args: argparse.Namespace, ctx: Context) -> Text:
    if (args.age is None) == (args.signing is None):
        raise UsageError("give exactly one of --age [OUT] or --signing [OUT]")
    if args.age is not None:
        existing = Path(args.age).expanduser() if args.age else paths.keys_dir() / DEFAULT_IDENTITY_FILE
        if existing.is_file() and not args.force:
            # Asking again is how people look their recipient up: show it, change nothing.
            return Text(f"age identity already at {existing} (kept; --force makes a new one)\nrecipient: {api.recipient_of(existing)}")
        folder = next_to_notebooks(args.age) if args.age else None
        if folder is not None:
            ctx.note(f"warning: {args.age} puts a private key beside the notebooks in {folder}; keep keys out of folders you share (default: keys/ in $NBMODELPACK_HOME)")
        path, recipient = api.keygen_age(args.age or None, force=args.force)
        return Text(f"age identity written to {path} (mode 0600)\nrecipient: {recipient}")
    private, public = api.keygen_signing(args.signing or None, force=args.force)
    return Text(f"signing key written to {private} (mode 0600)\npublic key: {public} ({api.fingerprint(public.read_bytes())[:23]}…)")


@verb(
    "encrypt",
    "encrypt weights and code with age: a new version",
    arg("ref"),
    arg("--to", action="append", default=[], metavar="RECIPIENT", help="age1… recipient or a file of them (repeatable; default: your own identity)"),
    arg("--passphrase", action="store_true", help="encrypt with a passphrase (asked, or $NBMODELPACK_PASSPHRASE)"),
    arg("--tag", action="append", default=[], help="extra tag for the new version"),
    arg("--json", action="store_true"),
)
def encrypt_verb(args: argparse.Namespace, ctx: Context) -> BundleInfo:
    if args.to and args.passphrase:
        raise UsageError("give --to age1… (repeatable) or --passphrase, not both")
    secret = ask_passphrase(ctx, confirm=True) if args.passphrase else None
    recipients = args.to
    if not recipients and secret is None:
        path, mine = own_recipient()
        recipients = [mine]
        ctx.note(f"encrypting to you ({mine[:16]}…, {path}); pass --to age1… for others")
    return api.encrypt(args.ref, recipients=recipients or None, passphrase=secret, tags=args.tag)


@verb(
    "decrypt",
    "make a plaintext version of an encrypted bundle (explicit: writes the weights in clear)",
    arg("ref"),
    *IDENTITY_ARGS,
    arg("--tag", action="append", default=[], help="extra tag for the new version"),
    arg("--json", action="store_true"),
)
def decrypt_verb(args: argparse.Namespace, ctx: Context) -> BundleInfo:
    return api.decrypt(args.ref, identity=identity_of(args, ctx), tags=args.tag)


@verb(
    "sign",
    "sign a version's files (as stored) with OpenSSF model_signing: a new version",
    arg("ref"),
    arg("--key", metavar="PEM", help="ECDSA private key (default: $NBMODELPACK_SIGNING_KEY, keys/signing.pem)"),
    arg("--tag", action="append", default=[], help="extra tag for the new version"),
    arg("--json", action="store_true"),
)
def sign_verb(args: argparse.Namespace, ctx: Context) -> BundleInfo:
    return api.sign(args.ref, key=args.key, tags=args.tag)


@verb(
    "verify",
    "check a version's signature (exit status 1 when it fails)",
    arg("ref"),
    arg("--key", action="append", metavar="PUB", help="public key (repeatable; default: trust policy keys, else your own)"),
    arg("--json", action="store_true"),
)
def verify_verb(args: argparse.Namespace, ctx: Context) -> api.VerifyResult:
    return api.verify(args.ref, key=args.key)
