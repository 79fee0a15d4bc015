"""A faster memory allocator for the command line: jemalloc with decay off, when the machine has it.

Measured on 2 CPU cores (docs/performance.md): PyTorch's CPU activation buffers above glibc's 32 MB mmap
ceiling are mapped and unmapped every batch; jemalloc keeps them. An allocator must be chosen before the
process starts, so the ``easytransfer`` command re-executes itself once with ``LD_PRELOAD`` set. In a notebook,
start Jupyter that way instead (``make`` prints the line: see docs/performance.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["JEMALLOC_CONF", "jemalloc_path", "reexec_with_jemalloc", "using_jemalloc"]

JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
    "/opt/homebrew/lib/libjemalloc.2.dylib",
)
_OPT_OUT = "EASYTRANSFER_ALLOCATOR"  # set to "system" to keep the default allocator


def jemalloc_path() -> str | None:
    """The jemalloc library on this machine (Debian / Ubuntu ``libjemalloc2``, Fedora, Homebrew), or ``None``."""
    return next((p for p in _CANDIDATES if Path(p).is_file()), None)


def using_jemalloc() -> bool:
    """Whether jemalloc is loaded in this process."""
    try:
        return "jemalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return "jemalloc" in os.environ.get("LD_PRELOAD", "")


def reexec_with_jemalloc(argv: list[str]) -> None:
    """Replace this process with the same command under jemalloc, if it is installed and not loaded yet."""
    lib = jemalloc_path()
    if lib is None or using_jemalloc() or os.environ.get(_OPT_OUT) == "system" or sys.platform == "darwin":
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    env[_OPT_OUT] = "system"  # never loop
    os.execve(sys.executable, [sys.executable, "-m", "easytransfer.cli", *argv], env)
