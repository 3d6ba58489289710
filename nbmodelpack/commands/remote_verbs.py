"""Verbs on remotes: remote add/ls/rm, login, publish, pull."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import api
from ..bundle.info import BundleInfo
from ..errors import UsageError
from .framework import Context, arg, verb
from .results import Text


@verb(
    "remote",
    "manage remotes: remote add NAME URL [--insecure] | remote ls | remote rm NAME",
    arg("action", choices=["add", "ls", "rm"]),
    arg("name", nargs="?"),
    arg("url", nargs="?", help="oci://HOST[:PORT]/NAMESPACE or file:///path"),
    arg("--insecure", action="store_true", help="plain HTTP (a registry on this machine or a test network)"),
    arg("--default", action="store_true", help="make it the remote publish uses without --to"),
    arg("--json", action="store_true"),
)
def remote_verb(args: argparse.Namespace, ctx: Context) -> Any:
    if args.action == "ls":
        return api.list_remotes()
    if not args.name:
        raise UsageError(f"remote {args.action} needs a NAME")
    if args.action == "rm":
        gone = api.remove_remote(args.name)
        return Text(f"removed remote {gone.name} ({gone.url})")
    if not args.url:
        raise UsageError("remote add needs NAME and URL", hint="e.g. remote add team oci://127.0.0.1:5000/team --insecure")
    added = api.add_remote(args.name, args.url, insecure=args.insecure, default=args.default)
    return Text(f"added remote {added}")


@verb(
    "login",
    "log in to a registry remote (saved in ~/.docker/config.json or $DOCKER_CONFIG)",
    arg("remote"),
    arg("-u", "--username"),
    arg("--password-stdin", action="store_true", help="read the password (or token) from standard input"),
    arg("--token", action="store_true", help="the secret is a bearer token, not a password"),
)
def login_verb(args: argparse.Namespace, ctx: Context) -> Text:
    if not args.token and not args.username:
        raise UsageError("login needs --username (or --token)")
    what = "token" if args.token else "password"
    secret = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else ctx.getpass(f"{what} for {args.remote}: ")
    if not secret:
        raise UsageError(f"empty {what}")
    if args.token:
        return Text(api.login(args.remote, token=secret))
    return Text(api.login(args.remote, args.username, secret))


@verb(
    "publish",
    "publish a version to a remote (tags: its version, latest, and --tag)",
    arg("ref"),
    arg("--to", metavar="REMOTE", help="remote name (default: the default remote)"),
    arg("--tag", help="an extra tag"),
    arg("--json", action="store_true"),
)
def publish_verb(args: argparse.Namespace, ctx: Context) -> api.PublishResult:
    return api.publish(args.ref, args.to, tag=args.tag)


@verb("pull", "pull REMOTE/NAME:TAG into the local store (every blob re-hashed)", arg("ref"), arg("--as", dest="as_name", metavar="NAME", help="local name"), arg("--json", action="store_true"))
def pull_verb(args: argparse.Namespace, ctx: Context) -> BundleInfo:
    return api.pull(args.ref, as_name=args.as_name)
