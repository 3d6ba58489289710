"""Verbs on the local store: help, ls, show, tag, rm, gc, fsck, import-pth, export, import."""

from __future__ import annotations

import argparse

from .. import api
from ..bundle.format import human_bytes
from ..bundle.info import BundleInfo
from ..errors import UsageError
from .framework import Context, arg, build_parser, json_arg, subparser, unknown_verb, verb
from .results import BundleList, FsckReport, Help, Text


@verb("help", "show usage of all verbs or one", arg("topic", nargs="?"))
def help_verb(args: argparse.Namespace, ctx: Context) -> Help:
    parser = build_parser(ctx.name)
    if args.topic:
        sub = subparser(parser, args.topic)
        if sub is None:
            raise unknown_verb(args.topic, ctx.name)
        return Help(sub.format_help())
    return Help(parser.format_help())


@verb("ls", "list local bundle versions (or a remote's with --remote)", arg("name", nargs="?"), arg("--json", action="store_true"), arg("--remote", metavar="REMOTE", help="list what a remote holds"))
def ls_verb(args: argparse.Namespace, ctx: Context) -> BundleList:
    if args.remote:
        return BundleList(i for i in api.list_remote(args.remote) if args.name is None or i.name == args.name)
    return BundleList(api.ls(args.name))


@verb("show", "show one bundle version", arg("ref"), arg("--json", action="store_true"), arg("--card", action="store_true", help="print the model card"))
def show_verb(args: argparse.Namespace, ctx: Context) -> BundleInfo | Text:
    if args.card:
        return Text(api.card(args.ref))
    return api.show(args.ref)


@verb("tag", "add or move a tag", arg("ref"), arg("new_tag"))
def tag_verb(args: argparse.Namespace, ctx: Context) -> BundleInfo:
    return api.tag(args.ref, args.new_tag)


@verb("rm", "remove a bundle version (blobs go at the next gc)", arg("ref"))
def rm_verb(args: argparse.Namespace, ctx: Context) -> Text:
    removed = api.rm(args.ref)
    return Text(f"removed {', '.join(removed)}")


@verb("gc", "delete blobs no bundle references", arg("--grace", type=float, default=3600.0, help="keep blobs younger than this many seconds"))
def gc_verb(args: argparse.Namespace, ctx: Context) -> Text:
    count, freed = api.gc(grace_seconds=args.grace)
    return Text(f"removed {count} blobs, freed {human_bytes(freed)}")


@verb("fsck", "re-hash every blob and report damage", arg("--json", action="store_true"))
def fsck_verb(args: argparse.Namespace, ctx: Context) -> FsckReport:
    return FsckReport(api.fsck())


@verb(
    "import-pth",
    "import a legacy .pth/.pt state dict (weights_only, never unpickles code)",
    arg("file"),
    arg("--name", required=True),
    arg("--arch", required=True, help="module:Class or module:factory that builds the model"),
    arg("--arch-kwargs", help="JSON object of init arguments"),
)
def import_pth_verb(args: argparse.Namespace, ctx: Context) -> BundleInfo:
    kwargs = json_arg(args.arch_kwargs, "--arch-kwargs")
    return api.import_pth(args.file, args.name, arch=args.arch, arch_kwargs=kwargs)


@verb(
    "export",
    "write a version as an OCI layout (tar file or --dir), or as plain files (--files)",
    arg("ref"),
    arg("-o", "--output", help="FILE.tar"),
    arg("--dir", help="directory"),
    arg("--files", help="directory to write the bundle's files into, by filepath (as stored; model-spec tar layers unpacked)"),
)
def export_verb(args: argparse.Namespace, ctx: Context) -> Text:
    if args.files:
        if args.output or args.dir:
            raise UsageError("give exactly one of -o FILE.tar, --dir DIR or --files DIR")
        out = api.export(args.ref, args.files, format="files")
        return Text(f"exported the files of {args.ref} to {out}")
    if bool(args.output) == bool(args.dir):
        raise UsageError("give exactly one of -o FILE.tar or --dir DIR")
    out = api.export(args.ref, args.output or args.dir, format="tar" if args.output else "dir")
    return Text(f"exported {args.ref} to {out}")


@verb("import", "import bundles from an OCI layout (tar or directory)", arg("file"), arg("--name"))
def import_verb(args: argparse.Namespace, ctx: Context) -> BundleList:
    return BundleList(api.import_(args.file, name=args.name))
