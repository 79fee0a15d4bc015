"""Paths in a table as files on this machine: as written, or found by their tail of folder names (paths from
another machine, Windows or POSIX)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

from .sources import candidate_files, resolved

__all__ = ["path_parts", "resolve_paths"]


def path_parts(name: str) -> tuple[str, ...]:
    pure = PureWindowsPath(name) if "\\" in name or (len(name) > 1 and name[1] == ":") else PurePosixPath(name)
    return tuple(p for p in pure.parts if p not in ("\\", "/") and not p.endswith(":\\"))


def resolve_paths(names: Sequence, base: Path, messages: list[str]) -> list[str | None]:
    """Each name as an absolute path: as written (relative to `base`), else found by file name inside `base`.

    Paths from another machine (``C:\\Users\\me\\data\\cat\\1.jpg``) are matched by their longest tail of folder
    names that exists under `base`. ``None`` where nothing matches (or several files match equally).
    """
    out, index, by_name = [], None, []
    for raw in names:
        name = str(raw)
        direct = Path(name) if Path(name).is_absolute() else base / name
        if direct.is_file():
            out.append(resolved(direct))
            continue
        if index is None:
            index = {}
            for f in candidate_files(base) if base.is_dir() else []:
                index.setdefault(f.name, []).append(f)
        parts = path_parts(name)
        candidates = index.get(parts[-1], []) if parts else []
        best, best_score, tie = None, -1, False
        for c in candidates:
            rel = c.relative_to(base).parts
            score = 0
            while score < min(len(rel), len(parts)) and rel[-1 - score] == parts[-1 - score]:
                score += 1
            if score > best_score:
                best, best_score, tie = c, score, False
            elif score == best_score:
                tie = True
        if best is not None and not tie:
            out.append(resolved(best))
            by_name.append((name, best))
        else:
            out.append(None)
    if by_name:
        name, found = by_name[0]
        messages.append(f"{len(by_name)} path(s) in the table do not exist as written and were found by file name "
                        f"inside {str(base)!r} (e.g. {name!r} -> {str(found)!r})")
    return out
