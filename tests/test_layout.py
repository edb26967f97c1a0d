"""The package's shape: no import cycle, no arrow from the library to the script folders, layers point one way.

The import graph is read from the source with `ast` (every import, including the
lazy ones inside functions, since a lazy import closes a cycle just as well),
so the test needs no JAX and sees the code as a reader does.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attent_jax"
SCRIPT_PACKAGES = ("theory", "experiments", "attent_theory", "attent_experiments")
# subpackage -> the subpackages it may import (besides itself); the top-level __init__ re-exports lazily.
ALLOWED = {
    "learner": set(),
    "teaching": {"learner"},
    "tasks": set(),
    "models": {"learner"},
    "training": {"learner", "teaching", "tasks", "models"},
    "cli": {"learner", "teaching", "tasks", "models", "training"},
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every module name this file imports (``from a import b`` yields a.b when that is a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # the longest prefix that is one of our modules
            parts = imported.split(".")
            for k in range(len(parts), 0, -1):
                candidate = ".".join(parts[:k])
                if candidate in modules and candidate != name:
                    targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of nodes closing a cycle, or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (cycle := visit(nxt)):
                return cycle
        colour[node] = "black"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in colour and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_planted_cycle():
    # The detector itself: a graph with a lazy-import cycle like the old model <-> transformer registry.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_library_has_no_import_cycle():
    # Package __init__ files are excluded: the top-level one re-exports lazily by name (no import statement).
    graph = import_graph()
    assert len(graph) > 20  # the walk found the package
    assert find_cycle(graph) is None, find_cycle(graph)


def test_library_never_imports_the_script_folders():
    offenders = sorted((_module_name(p), imp) for p in PACKAGE.rglob("*.py") for imp in _imports(p)
                       if imp.split(".")[0] in SCRIPT_PACKAGES)
    # Nor through a string handed to importlib (the way attent verify used to reach theory/).
    offenders += [(_module_name(p), m.group(0)) for p in PACKAGE.rglob("*.py")
                  for m in re.finditer(r"[\"'](theory|experiments|attent_theory|attent_experiments)\.\w+", p.read_text())]
    assert not offenders, offenders


@pytest.mark.parametrize("sub", sorted(ALLOWED))
def test_dependencies_point_one_way(sub):
    graph = import_graph()
    wrong = sorted((src, dst) for src, dsts in graph.items() if src.startswith(f"attent_jax.{sub}.")
                   or src == f"attent_jax.{sub}" for dst in dsts
                   if dst.startswith("attent_jax.") and dst.split(".")[1] not in ALLOWED[sub] | {sub})
    assert not wrong, wrong


def test_every_subpackage_is_in_the_readme_layout_table():
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`attent_jax/(\w+)/`", layout))
    on_disk = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert listed == on_disk == set(ALLOWED)


def test_nothing_installs_under_a_generic_top_level_name():
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    top = {name.split(".")[0] for name in setuptools["packages"]}
    assert top == {"attent_jax", "attent_theory", "attent_experiments"}
    assert setuptools["package-dir"] == {"attent_theory": "theory", "attent_experiments": "experiments"}


def test_public_api_resolves_from_the_top_level():
    import attent_jax

    for name in attent_jax.__all__:
        assert getattr(attent_jax, name) is not None, name
    with pytest.raises(AttributeError, match="nope"):
        attent_jax.nope  # noqa: B018
