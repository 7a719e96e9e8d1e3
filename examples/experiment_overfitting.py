"""Do weight decay and dropout keep a large network from overfitting a small training set? (the book, 6.4)

MultiLayerNet with 6 hidden layers of 100 on 300 training examples, SGD
for 300 epochs: plain, with weight decay 0.1 and with dropout 0.2, from
the same initial weights. Writes xpnet-experiments/overfitting.png and
.json (--out DIR: elsewhere) and prints the table; the same as

    xpnet experiment overfitting

Options of that command may follow, e.g. --quick, --device gpu, --epochs 100.
"""

import sys

from xpnet.tools.experiments import run_experiment

numbers = run_experiment("overfitting", sys.argv[1:])
for row in numbers["rows"]:
    print(f"{row['network']:>16}: train {row['train_acc']:.3f}, test {row['test_acc']:.3f}, gap {row['gap']:.3f}")
