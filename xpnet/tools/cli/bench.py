"""``xpnet bench report``: the benchmark suite's JSON as Markdown tables and a speedup plot."""

from __future__ import annotations

from .. import benchreport

HELP = "benchmark reports"
DESCRIPTION = "Reports on the results of xpnet's benchmark suite (benchmarks/, run with pytest-benchmark)."


def add_arguments(parser):
    reports = parser.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    report = reports.add_parser("report", help=benchreport.HELP, description=benchreport.DESCRIPTION)
    benchreport.add_arguments(report)


def run(args):
    return benchreport.run(args, prog="xpnet bench report")
