"""``xpnet info``: the versions and devices xpnet sees, and why the GPU is unusable where it is."""

from __future__ import annotations

import argparse
import os
import sys

from xpnet import __version__, backend, threads

from ..args import device

HELP = "versions, devices, and why the GPU is unusable where it is"
DESCRIPTION = ("Print the versions of xpnet, Python, NumPy, CuPy and CUDA, the devices xpnet can compute on, "
               "the default device (XPNET_DEVICE), and why the GPU is unusable where it is.")


def add_arguments(parser):
    """``xpnet info`` has no options."""


def default_device():
    """The default device and where it comes from; a malformed ``XPNET_DEVICE`` is a ValueError."""
    name = os.environ.get("XPNET_DEVICE")
    if not name:
        return "cpu (XPNET_DEVICE is not set)"
    try:
        name = device(name)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"XPNET_DEVICE: {exc}") from None
    return f"{name} (from XPNET_DEVICE)"


def run(args):
    default = default_device()
    versions = backend.library_versions()
    reason = backend.gpu_unavailable_reason()
    if versions["cupy"] and reason:  # installed, but no driver or device: say which CuPy, and why it is idle
        versions["cupy"] += f" (installed; no usable GPU: {reason})"
    print(f"xpnet        {__version__}")
    print(f"python       {sys.version.split()[0]}")
    for name in ("numpy", "cupy", "cuda_runtime", "cuda_driver"):
        print(f"{name:<12} {versions[name] or 'not available'}")
    print(f"default      {default}")
    print(f"threads      {threads.get_num_threads()} on the CPU ({threads.num_threads_source()}); "
          f"BLAS: {threads.blas_info()}")
    print("devices      cpu")
    for gpu in backend.gpu_devices():
        print(f"             gpu:{gpu['index']}  {gpu['name']}, {gpu['memory_bytes'] / 2**30:.0f} GiB, "
              f"compute capability {gpu['compute_capability']}")
    if reason:
        print(f"gpu          unusable: {reason}")
    return 0
