"""``xpnet experiment NAME``: one of the book's questions, answered with a picture, its numbers and a table."""

from __future__ import annotations

from ..experiments import EXPERIMENTS, common, get_experiment

HELP = "the book's questions as experiments with pictures"
DESCRIPTION = ("Answer one question a reader of the book asks: each experiment writes OUT/NAME.png and OUT/NAME.json "
               "and prints a table. See xpnet experiment NAME --help for the options of each.")


def add_arguments(parser):
    experiments = parser.add_subparsers(dest="experiment", metavar="NAME", required=True, title="experiments")
    for name in EXPERIMENTS:
        module = get_experiment(name)
        sub = experiments.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        common.add_arguments(sub, module)
        sub.set_defaults(experiment_module=module)


def run(args):
    common.run(args.experiment_module, args)
    return 0
