"""What does SimpleConvNet's pooling layer buy in parameters, time and accuracy? (the book, 7.5)

SimpleConvNet as `xpnet train` builds it, against the same network with
its 2x2 max pooling dropped (the convolution unchanged, so the first
Affine layer takes four times the inputs), each trained three times with
Adam. Writes xpnet-experiments/pooling.png and .json (--out DIR:
elsewhere) and prints the table; the same as

    xpnet experiment pooling

Options of that command may follow, e.g. --quick, --device gpu, --repeats 1.
"""

import sys

from xpnet.tools.experiments import run_experiment

numbers = run_experiment("pooling", sys.argv[1:])
for row in numbers["rows"]:
    print(f"{row['network']:>15}: {row['params']:,} parameters, {row['epoch_s'] * 1e3:.0f} ms per epoch, "
          f"test accuracy {row['test_acc']:.4f}")
