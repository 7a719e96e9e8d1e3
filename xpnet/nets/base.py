"""What every network of the book shares: a chain of layers, its parameters and its gradients."""

from __future__ import annotations

from .. import backend, fastpaths
from ..backend import get_array_module, to_device
from ..gradient import numerical_gradient
from ..layers import BatchNormalization, Convolution, Dropout, SoftmaxWithLoss

_TRAIN_FLG_LAYERS = (BatchNormalization, Dropout)
_BUFFERS = BatchNormalization.buffers


class Network:
    """A feed-forward chain of the book's layers ending in SoftmaxWithLoss.

    Subclasses fill ``self.params`` (name -> array) and ``self.layers`` (name
    -> layer, in order) and register which layer attribute holds each
    parameter with :meth:`_bind`. Inputs may be NumPy arrays whatever the
    device: each call moves them to the parameters' device once.
    """

    def __init__(self, weight_decay_lambda=0.0):
        self.params = {}
        self.layers = {}
        self.last_layer = SoftmaxWithLoss()
        self.weight_decay_lambda = float(weight_decay_lambda)
        self._slots = {}  # parameter name -> (layer, attribute)
        self._decayed = []  # names of the weights under weight decay

    def _bind(self, name, layer, attribute, decay=False):
        self._slots[name] = (layer, attribute)
        if decay:
            self._decayed.append(name)

    # --- devices ---------------------------------------------------------------

    @property
    def device(self):
        """'cpu' or 'gpu:N': where the parameters are."""
        return backend.device_of(next(iter(self.params.values())))

    def to(self, device):
        """Move parameters and batch-norm statistics to ``device``; returns the network.

        The GPU kernels run on CuPy's current device, which ``xpnet.set_device``
        and ``xpnet.using_device`` select: for a network on ``gpu:N`` other than
        ``gpu:0``, compute with that device selected too.
        """
        self.params = to_device(self.params, device)
        for name, (layer, attribute) in self._slots.items():
            setattr(layer, attribute, self.params[name])
        for layer in self.layers.values():
            for buffer in _BUFFERS:
                if getattr(layer, buffer, None) is not None:
                    setattr(layer, buffer, to_device(getattr(layer, buffer), device))
        return self

    def _on_device(self, *arrays):
        device = self.device
        return [to_device(a, device) for a in arrays]

    # --- the book's protocol ------------------------------------------------------

    def predict(self, x, train_flg=False):
        """Scores (N, output_size) before the softmax, on the network's device."""
        (x,) = self._on_device(x)
        for layer in self.layers.values():
            x = layer.forward(x, train_flg) if isinstance(layer, _TRAIN_FLG_LAYERS) else layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        """Mean cross entropy plus 0.5 * weight_decay_lambda * sum of squared weights (0-d array).

        ``train_flg=False`` (evaluation) is the default; :meth:`gradient`
        uses the training mode. The book's DeepConvNet always evaluated its
        loss with dropout active.
        """
        x, t = self._on_device(x, t)
        loss = self.last_layer.forward(self.predict(x, train_flg), t)
        if self.weight_decay_lambda:
            decay = sum((self.params[name] ** 2).sum() for name in self._decayed)
            loss = loss + 0.5 * self.weight_decay_lambda * decay
        return loss

    def accuracy(self, x, t, batch_size=100):
        """Fraction of correct predictions (a Python float), ``batch_size`` examples at a time."""
        if x.shape[0] == 0:
            raise ValueError("accuracy: no examples")
        correct = 0
        for start in range(0, x.shape[0], batch_size):
            xb, tb = self._on_device(x[start:start + batch_size], t[start:start + batch_size])
            if tb.ndim != 1:
                tb = tb.argmax(axis=1)
            correct = correct + (self.predict(xb).argmax(axis=1) == tb).sum()
        return float(correct) / x.shape[0]

    def gradient(self, x, t):
        """Gradients of the training-mode loss by backpropagation: a dict with the keys of ``params``."""
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        *later, first = reversed(list(self.layers.values()))
        for layer in later:
            dout = layer.backward(dout)
        if isinstance(first, Convolution) and fastpaths.enabled("first_layer_without_input_gradient"):
            # Its input is the data: there is no gradient to pass on, so it skips dx.
            first.backward(dout, input_gradient=False)
        else:
            first.backward(dout)
        grads = {}
        for name, (layer, attribute) in self._slots.items():
            grads[name] = getattr(layer, "d" + attribute)
            if name in self._decayed and self.weight_decay_lambda:
                grads[name] = grads[name] + self.weight_decay_lambda * self.params[name]
        return grads

    def numerical_gradient(self, x, t):
        """The same gradients by central differences (slow: two losses per parameter element).

        Uses the training-mode loss. With dropout, each evaluation draws a new
        mask, so compare with :func:`xpnet.gradient.check_network_gradient`,
        which fixes the mask.
        """
        x, t = self._on_device(x, t)
        return {name: numerical_gradient(lambda _: self.loss(x, t, train_flg=True), p) for name, p in self.params.items()}

    # --- saving ---------------------------------------------------------------------

    def state(self):
        """Parameters and batch-norm running statistics, by name (arrays on the network's device)."""
        state = dict(self.params)
        for lname, layer in self.layers.items():
            for buffer in _BUFFERS:
                if getattr(layer, buffer, None) is not None:
                    state[f"{lname}.{buffer}"] = getattr(layer, buffer)
        return state

    def load_state(self, state, where="state"):
        """Copy ``state`` (host or device arrays) into the network in place, checking names and shapes.

        Everything is checked before anything is copied, so a wrong file leaves the network as it was.
        """
        from ..checkpoint import restore_params

        params = {k: v for k, v in state.items() if "." not in k}
        buffers = {k: v for k, v in state.items() if "." in k}
        for key, value in buffers.items():
            lname, buffer = key.split(".", 1)
            layer = self.layers.get(lname)
            if layer is None or buffer not in _BUFFERS or not hasattr(layer, buffer):
                raise ValueError(f"{where}: unexpected entry {key!r}")
            expected = tuple(layer.gamma.shape)  # a running statistic has one value per feature or channel
            if tuple(value.shape) != expected:
                raise ValueError(f"{where}: {key} has shape {tuple(value.shape)} but the network's is {expected}")
        saved = {key.split(".", 1)[0] for key in buffers}
        missing = [f"{lname}.{b}" for lname in saved for b in _BUFFERS if f"{lname}.{b}" not in buffers]
        if missing:
            raise ValueError(f"{where}: missing entries {missing}")
        restore_params(self.params, params, where=where)
        xp = get_array_module(*self.params.values())
        dtype = self.params[next(iter(self.params))].dtype
        for key, value in buffers.items():
            lname, buffer = key.split(".", 1)
            setattr(self.layers[lname], buffer, xp.asarray(to_device(value, self.device), dtype=dtype))

    def save_params(self, file_name="params.npz"):
        """Write parameters (and batch-norm statistics) to an .npz file, atomically, without pickle."""
        from ..checkpoint import save_params

        save_params(file_name, self.state())

    def load_params(self, file_name="params.npz"):
        """Load what :meth:`save_params` wrote, on whatever device this network is."""
        from ..checkpoint import load_params

        self.load_state(load_params(file_name), where=str(file_name))
