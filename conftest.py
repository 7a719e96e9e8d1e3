"""Collection of the whole repository: the doctests of the package run with the tests.

Modules that need an optional library (Optuna for the search's studies) are
left out of the doctests where it is not installed; their tests skip, saying why.
"""

import importlib.util

import pytest

import xpnet

OPTIONAL = {"xpnet/tools/search/study.py": "optuna"}

collect_ignore = [path for path, module in OPTIONAL.items() if importlib.util.find_spec(module) is None]


@pytest.fixture(autouse=True)
def _doctests_start_on_the_cpu(request):
    """A doctest starts on the CPU with xpnet's generator seeded, whatever XPNET_DEVICE says."""
    if isinstance(request.node, pytest.DoctestItem):
        xpnet.set_device("cpu")
        xpnet.seed(0)
    yield


def pytest_ignore_collect(collection_path, config):
    """The conftest files are plugins, not modules with doctests (collecting them as such clashes on their name)."""
    if collection_path.name == "conftest.py":
        return True
    return None
