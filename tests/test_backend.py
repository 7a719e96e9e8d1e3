"""The device switch, per-array dispatch and seeding."""

import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import xpnet
from xpnet import backend


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter (so that module state and sys.modules start clean)."""
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env)


def test_cpu_is_the_default_device():
    result = run_python("import xpnet; print(xpnet.get_device())", XPNET_DEVICE="")
    assert result.stdout.strip() == "cpu", result.stderr


def test_an_unknown_xpnet_device_lists_the_valid_values():
    result = run_python("import xpnet; xpnet.get_device()", XPNET_DEVICE="tpu")
    assert "XPNET_DEVICE: unknown device 'tpu'; valid values are cpu, gpu, gpu:N, auto" in result.stderr


def test_set_device_rejects_unknown_names():
    with pytest.raises(ValueError, match="valid values are cpu, gpu, gpu:N, auto"):
        xpnet.set_device("cuda-ish")


def test_import_works_without_cupy_and_the_gpu_error_names_the_fix():
    result = run_python(
        """
        import sys
        sys.modules["cupy"] = None  # as if CuPy were not installed
        import xpnet
        assert xpnet.get_device() == "cpu"
        assert not xpnet.gpu_available()
        try:
            xpnet.set_device("gpu")
        except xpnet.DeviceError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "CuPy cannot be imported" in result.stdout
    assert "pip install 'xpnet[cuda12]'" in result.stdout and "XPNET_DEVICE=cpu" in result.stdout


def test_cupy_without_a_driver_is_reported_and_never_selected_silently():
    result = run_python(
        """
        import sys, types
        fake = types.ModuleType("cupy")
        fake.is_available = lambda: False
        sys.modules["cupy"] = fake  # installed, but no driver or device
        import xpnet
        print(xpnet.get_device())
        try:
            xpnet.set_device("gpu")
        except xpnet.DeviceError as exc:
            print(exc)
        """,
        XPNET_DEVICE="auto",
    )
    assert result.returncode == 0, result.stderr
    first, message = result.stdout.splitlines()[:2]
    assert first == "cpu"  # auto falls back; an explicit gpu does not
    assert "sees no usable CUDA device or driver" in message


def test_asking_for_the_gpu_through_the_environment_fails_loudly_without_one():
    if xpnet.gpu_available():
        pytest.skip("a GPU is usable here, so XPNET_DEVICE=gpu succeeds")
    result = run_python("import xpnet; xpnet.get_device()", XPNET_DEVICE="gpu")
    assert result.returncode != 0
    assert "the GPU was asked for but cannot be used" in result.stderr


def test_import_loads_neither_cupy_nor_the_tools_nor_their_optional_libraries():
    result = run_python(
        """
        import sys
        import xpnet
        print(*sorted(m for m in ("cupy", "xpnet.tools", "matplotlib", "optuna", "tqdm") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def test_the_version_of_an_installed_cupy_is_known_without_a_usable_gpu(fake_cupy):
    fake_cupy(is_available=lambda: False)
    assert not xpnet.gpu_available()
    versions = backend.library_versions()
    assert versions["cupy"] == "14.0.0"
    assert versions["cuda_runtime"] is None and versions["cuda_driver"] is None
    assert backend.gpu_unavailable_reason() == "CuPy is installed but sees no usable CUDA device or driver"


def test_the_version_of_cupy_is_known_when_cuda_fails(fake_cupy):
    def insufficient_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fake_cupy(is_available=insufficient_driver)
    assert backend.library_versions()["cupy"] == "14.0.0"
    assert "CUDA fails (RuntimeError: cudaErrorInsufficientDriver" in backend.gpu_unavailable_reason()


class CUDARuntimeError(RuntimeError):
    """What CuPy raises where the driver is missing or too old (cupy_backends.cuda.api.runtime)."""


def insufficient_driver():
    raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")


def test_cupy_without_a_driver_shows_cupys_own_cause_and_not_install_cupy(fake_cupy):
    fake_cupy(is_available=lambda: False, get_device_count=insufficient_driver)  # as real CuPy: False, cause hidden
    reason = backend.gpu_unavailable_reason()
    assert reason == ("CuPy 14.0.0 is installed but CUDA fails (CUDARuntimeError: cudaErrorInsufficientDriver: "
                      "CUDA driver version is insufficient for CUDA runtime version)")
    with pytest.raises(xpnet.DeviceError) as info:
        xpnet.set_device("gpu")
    message = str(info.value)
    assert "cudaErrorInsufficientDriver" in message and "install CuPy" not in message
    assert "nvidia-smi" in message and "XPNET_DEVICE=cpu" in message


def test_cupy_that_sees_no_device_says_so(fake_cupy):
    fake_cupy(is_available=lambda: False, get_device_count=lambda: 0)
    assert backend.gpu_unavailable_reason() == "CuPy 14.0.0 is installed but CUDA sees no device"
    with pytest.raises(xpnet.DeviceError, match="CUDA sees no device") as info:
        xpnet.set_device("gpu")
    assert "install CuPy" not in str(info.value)


def test_only_a_cupy_that_cannot_be_imported_asks_to_install_it(monkeypatch, forget_cupy_probe):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(xpnet.DeviceError, match=r"CuPy cannot be imported .*Fix: install CuPy for your CUDA version"):
        xpnet.set_device("gpu")


def test_without_cupy_there_is_no_cupy_version(monkeypatch, forget_cupy_probe):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    assert backend.library_versions()["cupy"] is None
    assert backend.gpu_unavailable_reason().startswith("CuPy cannot be imported")


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """A usable CuPy that sees gpu:0 and gpu:1; ``used`` records each cuda.Device(n).use()."""
    used = []

    class Device:
        def __init__(self, index=0):
            self.index = index

        def use(self):
            used.append(self.index)

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 2, getDevice=lambda: 0)
    fake = types.SimpleNamespace(__version__="14.0.0", is_available=lambda: True,
                                 cuda=types.SimpleNamespace(runtime=runtime, Device=Device), used=used)
    for name, value in {"_cupy": fake, "_cupy_checked": True, "_cupy_reason": None, "_cupy_version": "14.0.0"}.items():
        monkeypatch.setattr(backend, name, value)
    yield fake
    xpnet.set_device("cpu")  # before the real CuPy probe comes back


def test_using_device_restores_the_previous_device_even_when_the_block_fails(two_fake_gpus):
    xpnet.set_device("gpu:1")
    with pytest.raises(KeyError):
        with xpnet.using_device("cpu") as name:
            assert name == "cpu" and xpnet.get_device() == "cpu"
            raise KeyError("a failure inside the block")
    assert xpnet.get_device() == "gpu:1"
    with xpnet.using_device("gpu:0") as name:
        assert name == "gpu:0" and xpnet.get_device() == "gpu:0"
    assert xpnet.get_device() == "gpu:1"
    assert two_fake_gpus.used == [1, 1, 0, 1]  # the CUDA current device follows: set, restored, switched, restored


def test_a_switch_that_fails_leaves_the_device_as_it_was(two_fake_gpus):
    xpnet.set_device("gpu:1")
    with pytest.raises(xpnet.DeviceError, match=r"device 'gpu:2' does not exist: CUDA sees 2 device\(s\), gpu:0 to gpu:1"):
        with xpnet.using_device("gpu:2"):
            pass  # never reached: the switch itself fails
    assert xpnet.get_device() == "gpu:1" and two_fake_gpus.used == [1]


def test_using_the_gpu_in_a_block(xp):
    if xp is np:
        pytest.skip("GPU-only behaviour")
    with xpnet.using_device("gpu") as name:
        assert name == "gpu:0"
        assert backend.xp_of_device() is xp
    assert xpnet.get_device() == "cpu"


def test_get_array_module_dispatches_per_array(xp):
    a = xp.zeros(3, dtype=xp.float32)
    assert xpnet.get_array_module(a) is xp
    assert xpnet.get_array_module(np.zeros(1), 1.0) is np


def test_to_device_and_back_round_trips(device):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    moved = xpnet.to_device(host, device)
    assert backend.device_of(moved) == device
    back = xpnet.to_numpy(moved)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, host)


def test_to_device_moves_containers(device):
    moved = xpnet.to_device({"W": np.ones(2), "b": [np.zeros(1)]}, device)
    assert backend.device_of(moved["W"]) == device and backend.device_of(moved["b"][0]) == device


def test_synchronize_returns_when_the_queued_work_is_done(device):
    x = xpnet.to_device(np.full((256, 256), 1 / 256, dtype=np.float32), device)
    for _ in range(20):
        x = x @ x
    assert xpnet.synchronize() is None
    if device != "cpu":
        assert backend.xp_of_device(device).cuda.get_current_stream().done
    np.testing.assert_allclose(xpnet.to_numpy(x), 1 / 256, rtol=1e-4)


def test_seed_repeats_the_host_stream():
    xpnet.seed(42)
    first = backend.host_rng().standard_normal(4)
    xpnet.seed(42)
    np.testing.assert_array_equal(backend.host_rng().standard_normal(4), first)


def test_seeded_repeats_the_stream_on_every_device_and_puts_the_generators_back(xp):
    xpnet.seed(5)
    straight = backend.host_rng().standard_normal(2), xpnet.to_numpy(backend.random_uniform(xp, (2,)))
    xpnet.seed(5)
    with backend.seeded(9):
        inside = backend.host_rng().standard_normal(3), xpnet.to_numpy(backend.random_uniform(xp, (3,)))
    with backend.seeded(9):
        again = backend.host_rng().standard_normal(3), xpnet.to_numpy(backend.random_uniform(xp, (3,)))
    after = backend.host_rng().standard_normal(2), xpnet.to_numpy(backend.random_uniform(xp, (2,)))
    for a, b in zip(inside, again):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(after, straight):
        np.testing.assert_array_equal(a, b)


def test_random_uniform_is_float32_on_the_device(xp):
    u = backend.random_uniform(xp, (3, 4))
    assert type(u) is xp.ndarray and u.dtype == np.float32
