"""The command line: ``xpnet train``, ``info``, ``experiment``, ``search``, ``bench report``, ``book run``, ``convert``.

One parser tree: each command is a module here with ``HELP``,
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``, and
:func:`main` only parses and dispatches. Mistakes in the arguments, missing
data or an unusable device end with one line on stderr and a non-zero
exit, never a traceback; a closed pipe (``xpnet train | head -1``) ends
quietly.
"""

from __future__ import annotations

import os
import sys
import warnings

from xpnet import __version__

from ..args import Parser
from . import bench, book, convert, experiment, info, search, train

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = {"train": train, "info": info, "experiment": experiment, "search": search, "bench": bench,
            "book": book, "convert": convert}
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE


def build_parser():
    """The ``xpnet`` parser with one subparser per command."""
    parser = Parser(prog="xpnet", description="The networks of 'Deep Learning from Scratch' on CPU or CUDA GPU.")
    parser.add_argument("--version", action="version", version=f"xpnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv=None):
    """Run ``xpnet`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status, also after --help or a
    mistake in the arguments."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a mistake already reported by argparse
        return 0 if exit_.code is None else exit_.code
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            status = args.run(args)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
        return status
    except KeyboardInterrupt:
        print("xpnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (xpnet train | head -1): no traceback, and no second error when Python
        # flushes stdout at exit (the recipe of Python's documentation on SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (ValueError, OSError, ImportError, RuntimeError, FloatingPointError) as exc:
        print(f"xpnet {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """A warning as one line on stderr, without the file and line of the code that warned."""
    print(f"xpnet: warning: {_one_line(message)}", file=sys.stderr if file is None else file)


def _one_line(exc):
    """An error as one line: its ``summary`` where it has one (DatasetError), else its lines joined."""
    summary = getattr(exc, "summary", None)
    if summary:
        return summary
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
