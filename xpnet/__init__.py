"""xpnet: the layers of "Deep Learning from Scratch" on NumPy (CPU) or CuPy (CUDA GPU).

    >>> import xpnet
    >>> xpnet.get_device()          # from XPNET_DEVICE: 'cpu', 'gpu', 'gpu:N' or 'auto'
    'cpu'
    >>> xpnet.set_num_threads(2)    # CPU threads; default XPNET_NUM_THREADS, else every core this process may use
    2
"""

from .backend import (
    DEFAULT_DTYPE,
    DeviceError,
    get_array_module,
    get_device,
    gpu_available,
    gpu_unavailable_reason,
    seed,
    set_device,
    synchronize,
    to_device,
    to_numpy,
    using_device,
)
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_DTYPE",
    "DeviceError",
    "get_array_module",
    "get_device",
    "get_num_threads",
    "gpu_available",
    "gpu_unavailable_reason",
    "seed",
    "set_device",
    "set_num_threads",
    "synchronize",
    "to_device",
    "to_numpy",
    "using_device",
    "__version__",
]
