"""The layering of the package, read from its import graph: the shared stages know no task.

Every module under ``easytransfer/`` is parsed with `ast` (imports inside functions included, relative imports
resolved). No module outside ``easytransfer/tasks/`` may import a task's package (``easytransfer.tasks.<name>``);
the registry (``easytransfer.tasks``, ``.registry``, ``.loading``) is for the command line and the package's
``__init__`` only; and no shared module compares a value with a task's name (``task == "detection"``): that is a
seam the registry should give.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "easytransfer"
TASK_PACKAGES = sorted(p.name for p in (PACKAGE / "tasks").iterdir() if (p / "__init__.py").is_file())
REGISTRY_MODULES = {"easytransfer.tasks", "easytransfer.tasks.registry", "easytransfer.tasks.loading"}
REGISTRY_USERS = ("easytransfer.cli", "easytransfer")  # the command line and the package's __init__
# The curated public API (PUBLIC_NAMES, and the same names for type checkers) names the task modules that define
# DetectionData, SegmentationLearner ...; it is the one place above the tasks allowed to.
API_MODULE = "easytransfer"
NOT_YET: set[str] = set()  # shared modules let off these rules while another branch rewrites them (none now)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; ``from a import b`` gives ``a`` and ``a.b``)."""
    name = _module_name(path)
    package = name if _is_package(path) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return {m for m in found if m == "easytransfer" or m.startswith("easytransfer.")}


def _shared_modules() -> dict[str, Path]:
    """Every module outside easytransfer/tasks/, by name."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if "tasks" not in p.relative_to(PACKAGE).parts[:1]}


def _task_branches(path: Path) -> list[str]:
    """``line: source`` of every comparison with a task's name in `path` (``==``, ``!=``, ``in``, ``not in``)."""
    source = path.read_text(encoding="utf-8")
    names = set(TASK_PACKAGES)

    def names_a_task(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_a_task(e) for e in node.elts)
        return False

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(names_a_task(n) for n in [node.left, *node.comparators]):
            found.append(f"{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_the_task_packages_are_found():
    assert {"classification", "detection", "segmentation"} <= set(TASK_PACKAGES)


def test_relative_imports_are_resolved():
    imports = _imports(PACKAGE / "deploy" / "predictor.py")
    assert "easytransfer.deploy.bundle" in imports and "easytransfer.data.images.as_rgb" in imports


@pytest.mark.parametrize("name", sorted(set(_shared_modules()) - NOT_YET - {API_MODULE}))
def test_shared_modules_import_no_task(name):
    path = _shared_modules()[name]
    imports = _imports(path)
    tasks = sorted(m for m in imports if m.split(".")[:3][-1] in TASK_PACKAGES and m.startswith("easytransfer.tasks."))
    assert not tasks, f"{name} imports task modules {tasks}; give the seam to the registry (easytransfer.tasks)"
    registry = sorted(m for m in imports if m in REGISTRY_MODULES or m.startswith("easytransfer.tasks.registry.")
                      or m.startswith("easytransfer.tasks.loading."))
    allowed = name == "easytransfer" or name.startswith("easytransfer.cli")
    assert allowed or not registry, f"{name} imports the task registry {registry}; only cli/ and __init__ may"


@pytest.mark.parametrize("name", sorted(set(_shared_modules()) - NOT_YET))
def test_shared_modules_do_not_branch_on_a_task_name(name):
    branches = _task_branches(_shared_modules()[name])
    assert not branches, f"{name} compares with a task's name: {branches}; ask the task's registry record instead"


def task_branch_counts() -> dict[str, int]:
    """Comparisons with a task's name per shared module (``python tests/test_import_graph.py`` prints them)."""
    counts = {name: len(_task_branches(path)) for name, path in _shared_modules().items()}
    return {name: n for name, n in counts.items() if n}


if __name__ == "__main__":
    counts = task_branch_counts()
    print(f"task-name comparisons outside easytransfer/tasks/: {sum(counts.values())}", counts)
