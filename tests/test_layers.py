"""The package's import graph, read with `ast` (every import, those inside functions too): no loops between
modules, no import from a lower layer to a higher one (`knowpack.layers.LAYERS`), and few knowpack imports
inside functions, each with its reason on its line."""

from __future__ import annotations

import ast
from pathlib import Path

from knowpack.layers import LAYERS, layer_of

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "knowpack"
MAX_FUNCTION_IMPORTS = 20
"""The most knowpack imports inside functions the package may have (each with a `# reason` on its line)."""
FUNCTION_IMPORTS_NOW = 10
"""How many there are today: the count may only fall (to `MAX_FUNCTION_IMPORTS`)."""


def _name(path: Path) -> str:
    """`probe/run` for knowpack/probe/run.py, `probe/__init__` for the package."""
    return path.relative_to(PACKAGE).with_suffix("").as_posix()


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _target(dotted: str) -> str | None:
    """The module `knowpack.a.b` names (`a/b` or `a/b/__init__`), or None outside knowpack."""
    if dotted != "knowpack" and not dotted.startswith("knowpack."):
        return None
    path = dotted.split(".")[1:]
    while True:
        for name in ("/".join(path), "/".join([*path, "__init__"])):
            if name in MODULES:
                return name
        path = path[:-1]


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every knowpack import of `module`."""
    tree = ast.parse(MODULES[module].read_text())
    in_function = {
        id(node)
        for func in ast.walk(tree)
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(func)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from knowpack.a import b`: the submodule a.b where there is one, else a itself
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in {_target(name) for name in names} - {None, module}:
            found.append((target, node.lineno, id(node) in in_function))
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer_of(m) is None] == []
    entries = [entry for layer in LAYERS for entry in layer]
    assert len(entries) == len(set(entries))


def test_no_import_goes_up_a_layer():
    upward = [
        f"{module}:{line} imports {target} (layer {layer_of(target)} above {layer_of(module)})"
        for module, imports in GRAPH.items()
        for target, line, _ in imports
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_import_cycles():
    edges = {module: {target for target, _, _ in imports} for module, imports in GRAPH.items()}
    done: set[str] = set()

    def loop_from(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for target in sorted(edges[module]):
            if found := loop_from(target, [*path, module]):
                return found
        done.add(module)
        return None

    loops = [loop for module in MODULES if (loop := loop_from(module, []))]
    assert loops == [], " -> ".join(loops[0])


def _function_imports() -> list[tuple[str, int]]:
    return sorted(
        {(module, line) for module, imports in GRAPH.items() for _, line, inside in imports if inside}
    )


def test_function_level_imports_only_fall():
    assert len(_function_imports()) <= FUNCTION_IMPORTS_NOW


def test_few_function_level_imports_each_with_its_reason():
    found = _function_imports()
    lines = {module: MODULES[module].read_text().splitlines() for module, _ in found}
    silent = [f"{module}:{line}" for module, line in found if "#" not in lines[module][line - 1]]
    assert len(found) <= MAX_FUNCTION_IMPORTS, [f"{m}:{line}" for m, line in found]
    assert silent == []
