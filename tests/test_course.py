"""The short course in nbs/course/: written by tools/make_course.py, every exercise has a collapsed solution,
and every lesson runs top to bottom (solutions included).

The lessons share one kernel, reset (``%reset -f``) and moved to a fresh folder before each one: the libraries
are imported once for the nine lessons, and no lesson can use another's variables or files.
"""

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "nbs" / "course").glob("lesson_*.ipynb"))


def _make_course_module():
    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)  # make_course.py imports tools/notebook_builder.py, as when run there
    spec = importlib.util.spec_from_file_location("make_course", ROOT / "tools" / "make_course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(path: Path) -> list[tuple[str, str, dict]]:
    nb = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


def test_the_committed_lessons_are_the_generated_ones(tmp_path):
    written = _make_course_module().write_course(tmp_path)
    assert [p.name for p in written] == [p.name for p in LESSONS] and len(LESSONS) == 9
    for new, committed in zip(written, LESSONS):
        assert _cells(new) == _cells(committed), (
            f"{committed.name} differs from tools/make_course.py: run `cd tools && python make_course.py`")


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_exercise_is_followed_by_a_collapsed_solution(path):
    cells = nbformat.read(path, as_version=4).cells
    exercises = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("### Exercise")]
    assert exercises, f"{path.name} has no exercise"
    for i in exercises:
        solution = cells[i + 1]
        assert solution.cell_type == "code" and "solution" in solution.metadata.get("tags", []), path.name
        assert solution.metadata["jupyter"]["source_hidden"] is True


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path_factory.mktemp("course")))
    yield km
    km.shutdown_kernel(now=True)


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs(path, kernel, tmp_path):
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(f"%reset -f\nimport os\nos.chdir({str(tmp_path)!r})"))
    NotebookClient(nb, km=kernel, timeout=900).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
