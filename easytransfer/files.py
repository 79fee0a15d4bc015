"""Writing files so that a reader never sees half of one: a unique temporary file beside it, then a rename.

The temporary file lives in a private folder named ``.<name>.<pid>.<random>.tmp`` beside the target (writers
such as safetensors' ``save_file`` make temporary files of their own beside the path they are given; those land
in that folder too). A process killed while writing (kill -9, power loss) leaves the folder behind, and
`remove_stale_temporaries` deletes those whose process is gone when the folder is opened again. The finished
file gets the permissions of any file the user creates (``0o666`` less the umask), not the private ``0o600`` of
a temporary file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_safetensors", "atomic_write_text", "is_temporary", "remove_stale_temporaries",
           "temporary_prefix"]

# .<name>.<pid>.<random>.tmp (atomic writes), features.<pid>.<random>.tmp (memory-mapped feature caches)
_TEMPORARY = re.compile(r"^(?:\..+|features)\.(\d+)\.[^.]+\.tmp$")


def temporary_prefix(name: str) -> str:
    """The start of a temporary file's name for the final name `name`, written by this process.

    >>> temporary_prefix("model.safetensors") == f".model.safetensors.{os.getpid()}."
    True
    """
    return f".{name}.{os.getpid()}."


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is named as one of `atomic_write`'s temporary files.

    >>> is_temporary(".model.safetensors.4242.k2j3h4.tmp"), is_temporary("model.safetensors")
    (True, False)
    >>> is_temporary("features.4242.k2j3h4.tmp")  # a memory-mapped feature cache
    True
    """
    return _TEMPORARY.match(Path(path).name) is not None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders in `folder` left by processes that no longer run; returns them.

    A file of a process still running (another writer at work) is kept. Nothing happens when the folder is
    missing or cannot be listed.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / ".model.safetensors.999999999.abc.tmp").mkdir()  # no process has this id
    >>> [p.name for p in remove_stale_temporaries(folder)]
    ['.model.safetensors.999999999.abc.tmp']
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:  # someone else removed it, or we may not: leave it
            pass
    return removed


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else by setting it back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a unique temporary path in `path`'s folder, then rename it to `path`.

    A crash or Ctrl-C leaves the old file (or none) in place, never a partial one; two writers never share a
    temporary file (each writes in its own private folder beside `path`, removed afterwards). The folder is
    created when missing; the file gets ``0o666`` less the umask, as ``open`` would give it.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write(target, lambda tmp: tmp.write_text("hello")).read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent))
    tmp = private / path.name
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; see `atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` (name -> CPU tensor) as a safetensors file atomically; see `atomic_write`.

    An I/O failure (a full disk) is an `OSError` with its errno, as for any other file, not safetensors' own error;
    the old file stays as it was.

    >>> import tempfile, pathlib, torch
    >>> path = atomic_write_safetensors(pathlib.Path(tempfile.mkdtemp()) / "w.safetensors", {"w": torch.ones(2)})
    >>> path.name
    'w.safetensors'
    """
    from safetensors import SafetensorError  # imported here: `files` stays free of heavy imports
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            errno = int(code.group(1))
            raise OSError(errno, f"{os.strerror(errno)}: could not write {str(path)!r} (the old file, if any, is "
                                 "unchanged)") from None

    return atomic_write(path, write)
