"""Rules of the code base that catch most GPU bugs on a CPU-only machine."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xpnet"

# Code that computes on arrays of either device: it may only reach NumPy or CuPy through ``xp``.
ARRAY_CODE = ["layers.py", "util.py", "functions.py", "optimizer.py", "kernels.py", "labels.py"]


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def test_only_the_backend_imports_cupy():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "backend.py" and {"cupy", "cupyx"} & set(imported_modules(path))
    ]
    assert offenders == []


@pytest.mark.parametrize("name", ARRAY_CODE)
def test_array_code_never_calls_numpy_directly(name):
    path = PACKAGE / name
    assert path.exists(), name
    assert "numpy" not in set(imported_modules(path)), f"{name} imports numpy; use xp = get_array_module(...)"
