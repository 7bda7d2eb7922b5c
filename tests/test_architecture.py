"""The layout rules of ARCHITECTURE.md, checked on the source (AST), not by convention.

- no import circle between modules (module-level imports);
- no module imports a private name or module (``_x``) of another top-level package;
- no module other than a package ``__init__`` re-exports names (``__all__`` of imported
  names, or ``noqa: F401`` imports);
- every name a sub-package exports is defined inside that sub-package (one home);
- ``classifiers`` never imports TensorFlow or Keras.
"""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embedder", "classifiers", "pipelines")


def _modules():
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _resolve(node, module):
    """The absolute module an ``ImportFrom`` node names (relative imports resolved)."""
    if node.level == 0:
        return node.module
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module, *, top_level_only):
    """``(imported module, imported name or None, line)`` of a module's own imports."""
    tree = ast.parse(MODULES[module].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, module)
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in MODULES:  # ``from package import module``
                    out.append((full, None, node.lineno))
                else:
                    out.append((source, alias.name, node.lineno))
    return out


def _internal(name):
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module):
    """The package modules that importing ``module`` runs first (parents included)."""
    out = set()
    for source, _, _ in _imports(module, top_level_only=True):
        target = _internal(source)
        while target:
            # importing a.b.c runs the __init__ of a and a.b first
            if target in MODULES and target != module:
                out.add(target)
            target = target.rpartition(".")[0]
    # A package __init__ imports its own modules and they import siblings through full
    # paths: that edge (module -> own package) is how Python works, not a circle.
    return {t for t in out if not module.startswith(t + ".")}


def test_no_import_circle():
    graph = {m: _targets(m) for m in MODULES}
    state, stack = {}, []

    def visit(node):
        state[node] = "active"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "active":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def _is_private(dotted):
    return any(part.startswith("_") and not part.startswith("__")
               for part in dotted.split("."))


def test_no_private_import_across_packages():
    offences = []
    for module in MODULES:
        own = module.split(".")[0]
        for source, name, line in _imports(module, top_level_only=False):
            top = source.split(".")[0]
            if top not in PACKAGES or top == own:
                continue
            if _is_private(source) or (name and _is_private(name)):
                offences.append(f"{module}:{line} imports {source}.{name or ''}")
    assert not offences, offences


def test_no_module_reexports():
    offences = []
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        if "noqa: F401" in text:
            offences.append(f"{module}: noqa F401 import")
        tree = ast.parse(text)
        imported = {alias.asname or alias.name.split(".")[0]
                    for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
                    for alias in node.names}
        for node in tree.body:
            if (isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in node.targets)):
                names = {elt.value for elt in node.value.elts}
                if names & imported:
                    offences.append(f"{module}: __all__ re-exports {sorted(names & imported)}")
    assert not offences, offences


SUBPACKAGES = sorted(m for m, p in MODULES.items()
                     if p.name == "__init__.py" and m.count(".") == 1)


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_exported_name_has_one_home_in_its_package(package):
    module = importlib.import_module(package)
    assert module.__all__, f"{package} exports nothing"
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith(package + "."), (
                f"{package}.{name} is defined in {obj.__module__}")


def test_classifiers_never_import_tensorflow():
    for module in (m for m in MODULES if m.startswith("classifiers")):
        for source, _, line in _imports(module, top_level_only=False):
            assert source.split(".")[0] not in ("tensorflow", "keras"), f"{module}:{line}"


def test_the_checks_can_fail(tmp_path, monkeypatch):
    # A circle and a re-export planted in a copy of the module table are found.
    fake = {"embedder.a": tmp_path / "a.py", "embedder.b": tmp_path / "b.py"}
    fake["embedder.a"].write_text("from embedder.b import x\n__all__ = ['x']\n")
    fake["embedder.b"].write_text("import embedder.a\nx = 1\n")
    monkeypatch.setattr(__import__(__name__), "MODULES", fake, raising=False)
    monkeypatch.setitem(globals(), "MODULES", fake)
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circle()
    with pytest.raises(AssertionError, match="re-exports"):
        test_no_module_reexports()
