"""The package's shape: small modules, an import graph without circles, and no library
module that imports the command line."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "python" / "difffit"
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """difffit modules that ``name`` imports, anywhere in it (function bodies included),
    plus the packages whose ``__init__`` such an import runs."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[: len(base) - node.level + 1]
                mod = ".".join(root + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            parts = t.split(".")
            for k in range(1, len(parts) + 1):
                cand = ".".join(parts[:k])
                if cand in modules and cand != name and not name.startswith(cand + "."):
                    found.add(cand)
    return found


def test_no_module_is_longer_than_700_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_import_graph_has_no_circle_and_the_library_never_imports_the_cli():
    modules = _modules()
    graph = {n: _imports(n, p, modules) for n, p in modules.items()}
    for n, deps in graph.items():
        if not n.startswith(("difffit.cli", "difffit.__main__")):  # the entry points
            assert not any(d.startswith("difffit.cli") for d in deps), (n, deps)
    # Depth-first search for a cycle, reporting it.
    state: dict[str, int] = {}

    def visit(n, stack):
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            if d == "difffit":  # the package's lazy face imports nothing at import time
                continue
            if state.get(d) == 1:
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_the_public_face():
    import difffit

    for name in ("fit", "composite", "assemble", "identify", "score", "FitParams", "AcceptRules",
                 "AssembleParams", "IdentifyParams", "read_map", "read_structure", "ops", "build_info"):
        assert name in dir(difffit) and getattr(difffit, name) is not None
    assert callable(difffit.fit) and callable(difffit.composite) and callable(difffit.identify)
