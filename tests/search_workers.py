"""``xpnet search`` worker processes that meet each other at one point, however busy the machine.

:func:`meeting` gives the command of a worker that runs ``xpnet ARGS`` and,
at ``point``, leaves a file in ``folder`` and waits until ``workers`` files
are there:

* ``"opening"``: as it opens the storage, at most 3 s (a worker that holds
  the storage's lock there keeps the others waiting outside);
* ``"first-trial"``: as it begins its first trial, at most 120 s: every
  worker then shares the study, and none can run every trial alone; none
  waits forever for one that died.
"""

import sys

SCRIPT = """
import os, sys, time
from pathlib import Path
from xpnet.tools.cli import main
from xpnet.tools.search import storage as storages, study as studies

folder, workers, point = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def meet(seconds):
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + seconds
    while len(list(folder.iterdir())) < workers and time.monotonic() < deadline:
        time.sleep(0.01)


if point == "opening":
    open_storage = storages.open_storage

    def opening_together(*args, **kwargs):
        meet(3)
        return open_storage(*args, **kwargs)

    storages.open_storage = opening_together
else:
    make_objective = studies.make_objective

    def first_trial_together(*args, **kwargs):
        objective, first = make_objective(*args, **kwargs), [True]

        def wrapped(trial):
            if first[0]:
                first[0] = False
                meet(120)
            return objective(trial)
        return wrapped

    studies.make_objective = first_trial_together
sys.exit(main(sys.argv[4:]))
"""


def meeting(folder, workers, point, *args):
    """The command (a list of str) of a worker that meets ``workers`` others at ``point``; makes ``folder``."""
    assert point in ("opening", "first-trial"), point
    folder.mkdir(exist_ok=True)
    return [sys.executable, "-c", SCRIPT, str(folder), str(workers), point, *map(str, args)]
