"""The layout: the core (xpnet/) apart from its tools (xpnet/tools/), and imports without circles."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xpnet"
LAUNCHER = "xpnet.__main__"  # `python -m xpnet` runs the command line: the one core file that names a tool


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def is_package(name):
    return MODULES[name].name == "__init__.py"


def imports(name, top_level_only):
    """The xpnet modules ``name`` imports (with the packages above them, which Python imports first)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    base = name if is_package(name) else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                module = f"{anchor}.{node.module}" if node.module else anchor
            else:
                module = node.module
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES:
                parts = target.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    ancestors = {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}  # already imported before ``name``
    return found - ancestors


def test_the_core_imports_no_tool():
    core = [name for name in MODULES if not name.startswith("xpnet.tools") and name != LAUNCHER]
    offenders = {name: sorted(t for t in imports(name, top_level_only=False) if t.startswith("xpnet.tools"))
                 for name in core}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_module_imports_form_no_circle():
    graph = {name: imports(name, top_level_only=True) for name in MODULES}
    state, path = {}, []

    def visit(name):
        state[name] = "open"
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_tools_live_under_xpnet_tools():
    assert {name.split(".")[2] for name in MODULES if name.startswith("xpnet.tools.")} >= {
        "cli", "experiments", "search", "benchreport", "plot"}
    assert not {"cli", "experiments", "search", "benchreport", "plot"} & {name.split(".")[1] for name in MODULES
                                                                           if name.count(".") >= 1}
