"""What do the first-layer filters of a CNN learn? (the book, 7.6)

SimpleConvNet's 30 Conv1 filters before and after training (from the
book's initial weights of std 0.01), and the 30 feature maps of one test
image. Writes xpnet-experiments/conv-filters.png and .json (--out DIR:
elsewhere) and prints the table; the same as

    xpnet experiment conv-filters

Options of that command may follow, e.g. --quick, --device gpu, --dataset mnist, --weight-init-std he.
"""

import sys

from xpnet.tools.experiments import run_experiment

numbers = run_experiment("conv-filters", sys.argv[1:])
before, after = numbers["rows"]
print(f"training moved the filters by {after['relative_change']:.1f} times their initial size "
      f"(test accuracy {before['test_acc']:.3f} before, {after['test_acc']:.3f} after)")
