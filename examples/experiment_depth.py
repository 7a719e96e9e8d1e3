"""Does a deeper network learn better, and what does each layer cost? (the book, 6 and 8.2)

MultiLayerNet with 1 to 8 hidden layers of 100 ReLU units, trained with
Adam for 30 epochs, three times each: final train and test accuracy and
the time per epoch. Writes xpnet-experiments/depth.png and .json (--out
DIR: elsewhere) and prints the table; the same as

    xpnet experiment depth

Options of that command may follow, e.g. --quick, --device gpu, --max-depth 6, --repeats 1.
"""

import sys

from xpnet.tools.experiments import run_experiment

numbers = run_experiment("depth", sys.argv[1:])
best = max(numbers["rows"], key=lambda row: row["test_acc"])
print(f"best test accuracy: {best['test_acc']:.4f} with {best['hidden_layers']} hidden layers, "
      f"{best['epoch_s'] * 1e3:.1f} ms per epoch")
