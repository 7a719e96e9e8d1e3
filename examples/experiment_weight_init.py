"""How should the initial weights be scaled: 0.01, Xavier or He, under sigmoid and ReLU? (the book, 6.2)

The activations of 5 layers of 100 units for 1,000 random inputs, as
histograms per layer, and the training loss of MultiLayerNet (4 hidden
layers of 100, SGD) with each of the six combinations. Writes
xpnet-experiments/weight-init.png (--out DIR: elsewhere) and .json and
prints the table; the same as

    xpnet experiment weight-init

Options of that command may follow, e.g. --quick, --device gpu, --epochs 50.
"""

import sys

from xpnet.tools.experiments import run_experiment

numbers = run_experiment("weight-init", sys.argv[1:])
for row in numbers["rows"]:
    print(f"{row['activation']:>7}, {row['init']:<8}: layer-5 activations std {row['std5']:.1e}, "
          f"training loss {row['final_loss']:.3f} in the last epoch")
