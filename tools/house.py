"""The shape of the package: rooms, arrows between them, circles, task branches, the largest classes.

Reads the source with `ast` only (nothing is imported), so it runs on any checkout:

    python tools/house.py [PACKAGE_DIR]

Rooms are ordered from the leaves up (one-file leaves, data, models, evaluate, deploy, train, tasks, cli, the
package's __init__); an import from a lower room into a higher one is an "arrow back up". Every import counts,
also one inside a function. A "circle" is a set of modules that import each other (a strongly connected
component of more than one module). A "task branch" is a comparison with a task's name ("classification",
"segmentation", "detection", "single-label", "multi-label") or an isinstance test on a task's class, outside
tasks/; a "core-to-task import" is an import of a task module from outside tasks/ and cli/.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOMS = ["leaves", "data", "models", "evaluate", "deploy", "train", "tasks", "cli", "__init__"]
TASK_NAMES = {"classification", "segmentation", "detection", "single-label", "multi-label"}
TASK_CLASS_WORDS = ("Segmentation", "Detection")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(package: str, module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    first = parts[1]
    if first in ROOMS:
        return first
    if first in ("models", "data", "train", "evaluate", "deploy", "tasks", "cli"):
        return first
    return "leaves"


def imports_of(tree: ast.AST, module: str, is_package: bool, known) -> set[str]:
    found = set()
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base[: len(base) - node.level + 1]
                target = ".".join(prefix + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # "from . import x" names a module or a name of the package
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def task_branches(tree: ast.AST) -> int:
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            values = [node.left, *node.comparators]
            for v in values:
                if isinstance(v, ast.Constant) and v.value in TASK_NAMES:
                    count += 1
                    break
                if isinstance(v, (ast.Tuple, ast.List, ast.Set)) and any(
                        isinstance(e, ast.Constant) and e.value in TASK_NAMES for e in v.elts):
                    count += 1
                    break
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            if any(word in name for name in names for word in TASK_CLASS_WORDS):
                count += 1
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in (
                "detection", "segmentation"):
            count += 1
    return count


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def main(root: Path) -> None:
    package = root.name
    modules, trees, lines = {}, {}, {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(root, path)
        modules[name] = path
        text = path.read_text()
        trees[name] = ast.parse(text)
        lines[name] = text.count("\n")
    graph = {}
    for name, tree in trees.items():
        targets = imports_of(tree, name, modules[name].name == "__init__.py", modules)
        graph[name] = {t for t in targets if t in modules and t != name}
    rank = {room: i for i, room in enumerate(ROOMS)}
    arrows = Counter()
    back_up = []
    for name, targets in graph.items():
        for t in targets:
            a, b = room_of(package, name), room_of(package, t)
            if a != b:
                arrows[(a, b)] += 1
                if rank[a] < rank[b]:
                    back_up.append((name, t))
    rooms = Counter(room_of(package, m) for m in modules)
    print(f"modules: {len(modules)}, lines: {sum(lines.values())}")
    print("rooms: " + ", ".join(f"{room} {rooms[room]}" for room in ROOMS if rooms[room]))
    print("arrows between rooms (importer -> imported: imports):")
    for (a, b), n in sorted(arrows.items(), key=lambda kv: (rank[kv[0][0]], rank[kv[0][1]])):
        print(f"  {a:>8} -> {b:<8} {n}{'   (back up)' if rank[a] < rank[b] else ''}")
    print(f"arrows back up: {len(back_up)}")
    for a, b in sorted(back_up):
        print(f"  {a} -> {b}")
    circles = strongly_connected(graph)
    print(f"circles (modules importing each other): {len(circles)}")
    for c in circles:
        print("  " + " <-> ".join(m.removeprefix(package + ".") for m in c))
    task_modules = {m for m in modules if room_of(package, m) == "tasks"} | {
        m for m in modules if any(w in m for w in (".segmentation", ".detection"))}
    core = [m for m in modules if room_of(package, m) not in ("tasks", "cli", "__init__")]
    core_to_task = sorted((m, t) for m in core for t in graph[m] if t in task_modules and t.split(".")[-1] not in (
        "registry", "loading") and m not in task_modules)
    print(f"core-to-task imports (outside tasks/ and cli/): {len(core_to_task)}")
    for m, t in core_to_task:
        print(f"  {m} -> {t}")
    branches = {m: task_branches(trees[m]) for m in modules if m not in task_modules}
    print(f"task branches outside tasks/: {sum(branches.values())}")
    for m, n in sorted(branches.items()):
        if n:
            print(f"  {m}: {n}")
    classes = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}",
                                sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in node.body)))
    classes.sort(reverse=True)
    print("largest classes (lines, methods):")
    for n, name, methods in classes[:5]:
        print(f"  {name}: {n} lines, {methods} methods")
    print(f"classes over 400 lines: {sum(n > 400 for n, _, _ in classes)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "easytransfer"))
