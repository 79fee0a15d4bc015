"""`make wheel-check`: the wheel installs into a fresh venv and runs `easytransfer --help` and the demo."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a fresh venv installs torch, fastai, timm ... (minutes, and the package index)
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "wheel_check.py"), "--venv", str(tmp_path / "venv")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no notebooks or tests" in done.stdout and "test accuracy:" in done.stdout
    assert done.stdout.rstrip().endswith("wheel check passed")
