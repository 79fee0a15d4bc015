"""docs/architecture.md's layout block is what tools/architecture.py writes from the package tree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_generator():
    spec = importlib.util.spec_from_file_location("architecture_tool", ROOT / "tools" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_architecture_doc_is_what_the_generator_writes():
    generator = load_generator()
    committed = generator.DOC.read_text(encoding="utf-8")
    assert generator.render(committed) == committed, (
        "docs/architecture.md differs from what the package's modules and docstrings say: run "
        "`python tools/architecture.py` and commit the result.")


def test_every_module_and_task_is_in_the_layout_and_the_generator_is_deterministic():
    generator = load_generator()
    block = generator.generated()
    assert block == generator.generated()
    lines = block.splitlines()
    for path in sorted((ROOT / "easytransfer").rglob("*.py")):
        listed = path.parent.name + "/" if path.name == "__init__.py" else path.name
        assert any(line.strip().split(" ")[0] == listed for line in lines), listed
    from easytransfer.tasks import available_tasks

    for task in available_tasks():
        assert f"| `{task.name}` | {task.summary} |" in block
        assert f"  {task.name}/" in block


def test_a_changed_docstring_makes_the_doc_stale(tmp_path):
    generator = load_generator()
    committed = generator.DOC.read_text(encoding="utf-8")
    stale = committed.replace("Exceptions raised by easytransfer.", "Exceptions.")
    assert stale != committed and generator.render(stale) == committed
