"""The book's hyperparameter search (chapter 6.5), written with Optuna's own API.

    pip install 'xpnet[search]'
    python examples/hyperparameter_search.py

What ``xpnet search`` does by default, in a few lines: 500 examples of the
training set, 20% of them held out for validation (the test set is never
used), MultiLayerNet with 6 hidden layers of 100, SGD for 50 epochs, the
learning rate from 10^-6..10^-2 and the weight decay from 10^-8..10^-4,
log-uniformly, 100 trials of random sampling. Prints the best 20 as the book
does. About 20 seconds on a laptop CPU; XPNET_DEVICE=gpu trains on a GPU.
"""

import optuna

from xpnet.datasets import load_digits
from xpnet.tools.search import DEFAULT_SPACE
from xpnet.tools.search.study import make_objective, split_train_validation

(x_train, t_train), _ = load_digits()  # the test set plays no part in tuning
train, validation = split_train_validation(x_train, t_train, train_size=500, val_ratio=0.2, seed=0)
objective = make_objective(train, validation, DEFAULT_SPACE, epochs=50, optimizer="sgd", seed=0)

optuna.logging.set_verbosity(optuna.logging.WARNING)
# The book prunes nothing; optuna.pruners.MedianPruner() here would stop poor trials early.
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                            pruner=optuna.pruners.NopPruner())
study.optimize(objective, n_trials=100)

print("=========== Hyper-Parameter Optimization Result ===========")
finished = [trial for trial in study.trials if trial.value is not None]  # a diverged trial has none
best = sorted(finished, key=lambda trial: -trial.value)[:20]
for rank, trial in enumerate(best, start=1):
    print(f"Best-{rank}(val acc:{trial.value:.2f}) | lr:{trial.params['lr']:.3g}, "
          f"weight decay:{trial.params['weight_decay']:.3g}")
