"""How much faster is backpropagation than the numerical gradient, and do the two agree? (the book, 5.7)

For the book's TwoLayerNet (MultiLayerNet with one hidden layer) of
growing width, the seconds of one gradient by each method on a batch of 3,
and the largest difference between the two gradients in float64 and in
float32. Writes xpnet-experiments/backprop-vs-numerical.png and .json
(--out DIR: elsewhere) and prints the table; the same as

    xpnet experiment backprop-vs-numerical

Options of that command may follow, e.g. --quick, --device gpu, --hidden-sizes 10,100.
"""

import sys

from xpnet.tools.experiments import run_experiment

numbers = run_experiment("backprop-vs-numerical", sys.argv[1:])
largest = numbers["rows"][-1]
print(f"with {largest['params']:,} parameters the numerical gradient takes {largest['ratio']:,.0f} times as long; "
      f"the gradients differ by at most {largest['max_diff']:.1e} in float64")
