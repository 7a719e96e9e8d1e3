"""Does batch normalization make training indifferent to the initial weights, and what does it cost? (the book, 6.3)

MultiLayerNetExtend (5 hidden layers of 100) with and without batch
normalization, trained with SGD on 1,000 examples from 16 initial weight
scales between 1 and 0.0001: the training accuracy per epoch and the time
per epoch of each. Writes xpnet-experiments/batchnorm.png and .json (--out
DIR: elsewhere) and prints the table; the same as

    xpnet experiment batchnorm

Options of that command may follow, e.g. --quick, --device gpu, --epochs 10.
"""

import sys

from xpnet.tools.experiments import run_experiment

numbers = run_experiment("batchnorm", sys.argv[1:])
rows = numbers["rows"]
for key, name in (("bn", "with batch normalization"), ("plain", "without")):
    learned = sum(1 for row in rows if (row[f"{key}_train_acc"] or 0) >= 0.9)
    print(f"{name}: train accuracy of 0.9 or more from {learned} of {len(rows)} initial scales")
