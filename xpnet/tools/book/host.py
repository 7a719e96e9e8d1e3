"""What a book script receives is NumPy, whatever the device: the networks, optimizers and Trainer of its ``common``.

The book's scripts do array math with NumPy on what a network returns
(``np.argmax(network.predict(x), axis=1)``, ``np.abs(grad_backprop[key] -
grad_numerical[key])``, ``smooth_curve(train_loss)``), and NumPy refuses
CuPy arrays. The classes here are xpnet's, with the book's constructor
signatures: their parameters live on ``XPNET_DEVICE``, and ``predict``,
``loss``, ``gradient`` and ``numerical_gradient`` hand back host NumPy
arrays and scalars (copies from the GPU; on the CPU the arrays themselves).
``params`` stays on the device, as the optimizers update it there; the
optimizers here take the host gradients for parameters on any device, and
the Trainer here trains with the device gradients, without copies.
"""

from __future__ import annotations

import sys

from xpnet import nets, optimizer, trainer
from xpnet.backend import device_of, to_device, to_numpy

__all__ = ["HostResults", "HostGradients", "MultiLayerNet", "MultiLayerNetExtend", "Trainer",
           "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]


class HostResults:
    """The book's network methods, returning host NumPy: mixed in before an :class:`xpnet.nets.Network`."""

    def predict(self, x, train_flg=False):
        """Scores (N, output_size), a NumPy array."""
        return to_numpy(self._scores(x, train_flg))

    def loss(self, x, t, train_flg=False):
        """The loss, a NumPy scalar (float32 for a float32 network)."""
        return to_numpy(self._loss(x, t, train_flg))[()]

    def gradient(self, x, t):
        """Gradients by backpropagation, a dict of NumPy arrays (see :meth:`device_gradient`)."""
        return to_device(self.device_gradient(x, t), "cpu")

    def device_gradient(self, x, t):
        """Gradients by backpropagation on the network's device: what the Trainer and the optimizers use."""
        return super().gradient(x, t)

    def numerical_gradient(self, x, t):
        """Gradients by central differences, a dict of NumPy arrays."""
        return to_device(super().numerical_gradient(x, t), "cpu")


class MultiLayerNet(HostResults, nets.MultiLayerNet):
    """xpnet's MultiLayerNet with the book's signature, on ``XPNET_DEVICE``, handing back NumPy."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu", weight_init_std="relu",
                 weight_decay_lambda=0):
        super().__init__(input_size, hidden_size_list, output_size, activation, weight_init_std,
                         weight_decay_lambda)


class MultiLayerNetExtend(HostResults, nets.MultiLayerNetExtend):
    """xpnet's MultiLayerNetExtend with the book's signature (inverted dropout, batch norm per feature)."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu", weight_init_std="relu",
                 weight_decay_lambda=0, use_dropout=False, dropout_ration=0.5, use_batchnorm=False):
        super().__init__(input_size, hidden_size_list, output_size, activation, weight_init_std,
                         weight_decay_lambda, use_dropout, dropout_ration, use_batchnorm)


class HostGradients:
    """``update(params, grads)`` where each gradient may sit on the host while its parameter is on a GPU."""

    def update(self, params, grads):
        moved = {}
        for key, grad in grads.items():
            param = params.get(key)
            if hasattr(param, "shape") and hasattr(grad, "shape") and device_of(grad) != device_of(param):
                grad = to_device(grad, device_of(param))
            moved[key] = grad
        super().update(params, moved)


class SGD(HostGradients, optimizer.SGD):
    """xpnet's SGD; host gradients for parameters on any device."""


class Momentum(HostGradients, optimizer.Momentum):
    """xpnet's Momentum; host gradients for parameters on any device."""


class Nesterov(HostGradients, optimizer.Nesterov):
    """xpnet's Nesterov; host gradients for parameters on any device."""


class AdaGrad(HostGradients, optimizer.AdaGrad):
    """xpnet's AdaGrad; host gradients for parameters on any device."""


class RMSprop(HostGradients, optimizer.RMSprop):
    """xpnet's RMSprop; host gradients for parameters on any device."""


class Adam(HostGradients, optimizer.Adam):
    """xpnet's Adam; host gradients for parameters on any device."""


_BOOK_OPTIMIZER_PARAM = {"lr": 0.01}  # the book's default optimizer_param, never changed


class Trainer(trainer.Trainer):
    """xpnet's Trainer with the book's signature; the networks above train with their device gradients.

    It keeps xpnet's behaviour: shuffled epochs without replacement, a
    progress bar and one line per epoch instead of the book's line per step,
    and the final test accuracy over the whole test set.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100, optimizer="SGD",
                 optimizer_param=_BOOK_OPTIMIZER_PARAM, evaluate_sample_num_per_epoch=None, verbose=True):
        if optimizer_param is _BOOK_OPTIMIZER_PARAM:  # the book's default, not given: none for an optimizer object
            optimizer_param = dict(optimizer_param) if isinstance(optimizer, str) else None
        super().__init__(network, x_train, t_train, x_test, t_test, epochs, mini_batch_size, optimizer,
                         optimizer_param, evaluate_sample_num_per_epoch, verbose,
                         progress=verbose and sys.stderr.isatty())  # the bar on a terminal, as xpnet train

    def train_step(self, x_batch, t_batch):
        """One step of :meth:`xpnet.trainer.Trainer.train_step`, with the gradients left on the device."""
        gradient = getattr(self.network, "device_gradient", self.network.gradient)
        self.optimizer.update(self.network.params, gradient(x_batch, t_batch))
        return self._step_loss(x_batch, t_batch)
