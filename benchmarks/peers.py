"""PyTorch equivalents of xpnet's layers and networks, for times measured side by side.

PyTorch is optional: where it cannot be imported (or sees no CUDA device)
the torch cases skip with the reason from :func:`unavailable_reason`. It is
imported on first use only, so a run without torch cases never pays for it.

Settings that keep the comparison fair, applied by :func:`configure`:
float32 everywhere, TF32 off for matrix products and convolutions (xpnet's
CuPy path runs full float32 unless CUPY_TF32=1), and as many CPU threads as
xpnet uses (``xpnet.get_num_threads()``). cuDNN's autotuner stays at
PyTorch's default (off).
"""

from __future__ import annotations

_torch = None
_reason: str | None = None
_checked = False
_threads: int | None = None


def _load():
    global _torch, _reason, _checked
    if not _checked:
        _checked = True
        try:
            import torch
        except Exception as exc:  # ImportError, or a broken install (OSError about a shared library)
            _reason = f"PyTorch cannot be imported ({type(exc).__name__}: {exc}); install it with pip install torch"
        else:
            _torch = torch
    return _torch


def unavailable_reason(cuda: bool = False) -> str | None:
    """Why the torch peer cannot run (on CUDA when ``cuda``), or None when it can."""
    torch = _load()
    if torch is None:
        return _reason
    if cuda:
        try:
            if not torch.cuda.is_available():
                return f"PyTorch {torch.__version__} sees no usable CUDA device (built for CUDA {torch.version.cuda})"
        except Exception as exc:
            return f"PyTorch's CUDA fails ({type(exc).__name__}: {exc})"
    return None


def configure(threads: int) -> None:
    """float32 without TF32, and ``threads`` CPU threads (the count xpnet uses)."""
    global _threads
    torch = _load()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if _threads != threads:
        torch.set_num_threads(int(threads))
        _threads = int(threads)


def threads() -> int | None:
    return _torch.get_num_threads() if _torch is not None else None


def facts(threads: int) -> dict:
    """Versions and settings of the torch peer, for the machine facts of a result file."""
    torch = _load()
    if torch is None:
        return {"available": False, "reason": _reason}
    configure(threads)
    info = {
        "available": True,
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn": None,
        "cuda_device": None,
    }
    if unavailable_reason(cuda=True) is None:
        info["cudnn"] = torch.backends.cudnn.version()
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


# --- devices and memory ---------------------------------------------------------------


def synchronize() -> None:
    _torch.cuda.synchronize()


def cuda_device_name() -> str:
    return _torch.cuda.get_device_name()


def cuda_peak_bytes(call) -> int:
    """Peak CUDA memory that ``call()`` allocated beyond what was allocated when it started."""
    torch = _torch
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    call()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - before)


def tensor(host_array, device: str):
    """A torch tensor on ``device`` ('cpu' or 'cuda') with the values of a NumPy array."""
    return _torch.from_numpy(host_array.copy()).to(device)


# --- layers ------------------------------------------------------------------------------


def conv2d(W, b, stride, pad, device):
    """nn.Conv2d holding the filters W (FN, C, FH, FW) and biases b (FN,) of an xpnet Convolution."""
    nn = _torch.nn
    fn, c, fh, fw = W.shape
    module = nn.Conv2d(c, fn, (fh, fw), stride=stride, padding=pad)
    _copy(module, weight=W, bias=b)
    return module.to(device)


def max_pool(pool_h, pool_w, stride, pad, device):
    return _torch.nn.MaxPool2d((pool_h, pool_w), stride=stride, padding=pad).to(device)


def linear(W, b, device):
    """Flatten then nn.Linear holding xpnet's Affine W (D, M), b (M,) (torch stores W transposed)."""
    nn = _torch.nn
    d, m = W.shape
    module = nn.Linear(d, m)
    _copy(module, weight=W.T, bias=b)
    return nn.Sequential(nn.Flatten(), module).to(device)


def batch_norm(gamma, beta, ndim, eps, momentum, device):
    """BatchNorm1d (input (N, D)) or BatchNorm2d (input (N, C, H, W)) as xpnet's BatchNormalization.

    xpnet keeps ``momentum * running + (1 - momentum) * batch``; torch's
    momentum is the weight of the batch, so it gets ``1 - momentum``.
    """
    nn = _torch.nn
    cls = nn.BatchNorm2d if ndim == 4 else nn.BatchNorm1d
    module = cls(gamma.shape[0], eps=eps, momentum=1.0 - momentum)
    _copy(module, weight=gamma, bias=beta)
    return module.to(device)


def relu(device):
    return _torch.nn.ReLU().to(device)


def cross_entropy(device):
    """Softmax with the mean cross-entropy loss over index labels, as xpnet's SoftmaxWithLoss."""
    return _torch.nn.CrossEntropyLoss().to(device)


def _copy(module, **arrays):
    with _torch.no_grad():
        for name, value in arrays.items():
            getattr(module, name).copy_(_torch.from_numpy(value.copy()))


class LayerPeer:
    """A torch module driven like a book layer: forward keeps the graph, backward fills every gradient.

    ``x`` is the input (it gets ``requires_grad`` so that dx is computed, as
    xpnet's backward does); ``t`` the labels for a loss module.
    """

    def __init__(self, module, x, t=None):
        self.module = module
        self.x = x.requires_grad_(True)
        self.t = t

    def forward(self):
        self.x.grad = None
        for p in self.module.parameters():
            p.grad = None
        if self.t is None:
            return self.module(self.x)
        return self.module(self.x, self.t)

    @staticmethod
    def backward(y, dout=None):
        y.backward(dout)


# --- networks ------------------------------------------------------------------------------


def net_like(net, device):
    """nn.Sequential with the layers, shapes and current weights of an xpnet network (on the CPU).

    Walks ``net.layers`` in order: Convolution -> Conv2d, Pooling -> MaxPool2d,
    Affine -> Flatten + Linear, Relu -> ReLU, Dropout -> Dropout,
    BatchNormalization -> BatchNorm1d/2d. The loss is separate
    (:func:`cross_entropy`), as the book keeps SoftmaxWithLoss apart.
    """
    from xpnet import layers as L
    from xpnet.backend import to_numpy

    nn = _torch.nn
    modules, ndim = [], 4
    for name, layer in net.layers.items():
        if isinstance(layer, L.Convolution):
            modules.append(conv2d(to_numpy(layer.W), to_numpy(layer.b), layer.stride, layer.pad, "cpu"))
        elif isinstance(layer, L.Pooling):
            if layer.mode != "max":
                raise ValueError(f"{name}: only max pooling has a peer here")
            modules.append(max_pool(layer.pool_h, layer.pool_w, layer.stride, layer.pad, "cpu"))
        elif isinstance(layer, L.Affine):
            modules.append(linear(to_numpy(layer.W), to_numpy(layer.b), "cpu"))
            ndim = 2
        elif isinstance(layer, L.Relu):
            modules.append(nn.ReLU())
        elif isinstance(layer, L.Dropout):
            modules.append(nn.Dropout(layer.dropout_ratio))
        elif isinstance(layer, L.BatchNormalization):
            modules.append(batch_norm(to_numpy(layer.gamma), to_numpy(layer.beta), ndim, layer.eps,
                                      layer.momentum, "cpu"))
        else:
            raise ValueError(f"{name}: no torch peer for {type(layer).__name__}")
    return nn.Sequential(*modules).to(device)


class NetPeer:
    """A torch network with its loss and optimizer: one training step, or inference."""

    def __init__(self, model, optimizer: str, lr: float):
        self.model = model
        self.loss = _torch.nn.CrossEntropyLoss()
        cls = {"sgd": _torch.optim.SGD, "adam": _torch.optim.Adam}[optimizer]
        self.optimizer = cls(model.parameters(), lr=lr)

    def train_step(self, x, t):
        """Forward, backward and update, in training mode."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model(x), t)
        loss.backward()
        self.optimizer.step()
        return loss

    def predict(self, x):
        """Scores in evaluation mode, without building a graph."""
        self.model.eval()
        with _torch.inference_mode():
            return self.model(x)
