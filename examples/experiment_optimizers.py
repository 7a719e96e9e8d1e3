"""Which optimizer gets there fastest: SGD, Momentum, AdaGrad, RMSprop or Adam? (the book, 6.1)

Their paths on f(x, y) = x²/20 + y² from (-7, 2), and the training loss of
the same MultiLayerNet (4 hidden layers of 100, the same initial weights
and batches) over about 2,000 steps with each. Writes
xpnet-experiments/optimizers.png (--out DIR: elsewhere) and .json and
prints the table; the same as

    xpnet experiment optimizers

Options of that command may follow, e.g. --quick, --device gpu, --dataset mnist.
"""

import sys

from xpnet.tools.experiments import run_experiment

numbers = run_experiment("optimizers", sys.argv[1:])
for row in sorted(numbers["rows"], key=lambda row: row["final_loss"]):
    print(f"{row['optimizer']:>8}: training loss {row['final_loss']:.2e} in the last epoch, "
          f"test accuracy {row['test_acc']:.4f}")
