"""Builds the wheel, installs it into a fresh virtual environment and runs the command a new user would run.

    python tools/wheel_check.py [--venv DIR] [--keep]

Steps: ``pip wheel . --no-deps`` into a temporary folder; the wheel must hold the package and its data and no
notebooks or tests; a plain ``python -m venv`` (no system site-packages) installs the wheel with its
dependencies through pip's normal configuration; then ``easytransfer --help`` and
``easytransfer demo --limit 10`` run from outside the source tree. Prints one line
per step and exits non-zero at the first failure. ``make wheel-check`` runs it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_TOP_LEVEL = ("nbs/", "tests/", "tools/", "docs/", "benchmarks/")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `cmd`, print how long it took, raise with its output when it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    print(f"[{time.perf_counter() - start:6.1f} s] {' '.join(map(str, cmd[:6]))}{' ...' if len(cmd) > 6 else ''}"
          f" -> exit {done.returncode}", flush=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def build_wheel(dest: Path) -> Path:
    """``pip wheel . --no-deps`` into `dest`; returns the wheel's path."""
    run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(dest)])
    (wheel,) = dest.glob("easytransfer-*.whl")
    return wheel


def check_wheel_contents(wheel: Path) -> list[str]:
    """The wheel's file names, after checking it has the package and nothing from nbs/, tests/, tools/ ..."""
    names = zipfile.ZipFile(wheel).namelist()
    stray = [n for n in names if n.startswith(FORBIDDEN_TOP_LEVEL) or n.endswith(".ipynb")]
    if stray:
        sys.exit(f"the wheel holds files that are not part of the package: {stray[:10]}")
    if "easytransfer/__init__.py" not in names or "easytransfer/version.py" not in names:
        sys.exit(f"the wheel lacks the package itself: {names[:10]}")
    print(f"{wheel.name}: {len(names)} files, no notebooks or tests", flush=True)
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=None, help="where to make the fresh venv (default: a temp dir)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="easytransfer-wheel-"))
    wheel = build_wheel(work / "dist")
    check_wheel_contents(wheel)
    venv = args.venv or work / "venv"
    run([sys.executable, "-m", "venv", "--clear", str(venv)])
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "-q", str(wheel)])
    version = run([str(py), "-c", "import easytransfer; print(easytransfer.__version__)"], cwd=work).stdout.strip()
    print(f"installed easytransfer {version} in {venv}", flush=True)
    run([str(venv / "bin" / "easytransfer"), "--help"], cwd=work)
    demo = run([str(venv / "bin" / "easytransfer"), "demo", "--limit", "10", "--out", str(work / "demo")], cwd=work)
    print(demo.stdout.strip().splitlines()[-1], flush=True)
    print("wheel check passed", flush=True)


if __name__ == "__main__":
    main()
