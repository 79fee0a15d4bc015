"""Runs every lesson of nbs/course/ in a fresh kernel and prints its wall-clock and CPU seconds (docs/teaching.md).

    python tools/time_course.py [LESSON.ipynb ...]

CPU seconds are the kernel's own (all its threads) plus the commands it ran (lesson 9's CLI): on a shared,
loaded machine they say more about a laptop than the wall clock does. Nothing is written back.
"""

import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

COURSE = Path(__file__).resolve().parent.parent / "nbs" / "course"
CPU_CELL = ("import resource as _r\n"
            "_s, _c = _r.getrusage(_r.RUSAGE_SELF), _r.getrusage(_r.RUSAGE_CHILDREN)\n"
            "print(_s.ru_utime + _s.ru_stime + _c.ru_utime + _c.ru_stime)")


def time_lesson(path: Path) -> tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of running the notebook at `path` from a fresh kernel to its last cell."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CPU_CELL))
    start = time.perf_counter()
    NotebookClient(nb, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": tempfile.mkdtemp(prefix="lesson-")}}).execute()
    wall = time.perf_counter() - start
    return wall, float(nb.cells[-1].outputs[-1]["text"])


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted(COURSE.glob("lesson_*.ipynb"))
    for path in paths:
        wall, cpu = time_lesson(path)
        print(f"{path.stem}: {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
