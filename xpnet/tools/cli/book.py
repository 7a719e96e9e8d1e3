"""``xpnet book run SCRIPT [ARGS]``: the book's chapter scripts, unchanged, on xpnet (see :mod:`xpnet.tools.book`)."""

from __future__ import annotations

from ..book import run as book_run

HELP = "the book's chapter scripts, unchanged, on xpnet"
DESCRIPTION = ("Run a chapter script of 'Deep Learning from Scratch' as it is: its imports of common.* and "
               "dataset.mnist resolve to xpnet, on the device of --device or XPNET_DEVICE.")


def add_arguments(parser):
    commands = parser.add_subparsers(dest="book_command", metavar="SUBCOMMAND", required=True)
    script = commands.add_parser("run", help="run a chapter script of the book unchanged",
                                 description="Run a chapter script of the book unchanged on xpnet.")
    book_run.add_arguments(script)


def run(args) -> int:
    return book_run.run(args)
