"""What happened to the input files when the data was built: exclusions, conversions, counts, warnings."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import DataWarning

__all__ = ["IMBALANCE_RATIO", "DataReport", "class_counts", "warn_data"]

IMBALANCE_RATIO = 0.1  # warn when the smallest training class has under 10% of the largest's images
SPLITS = ("train", "valid", "test")


DATA_PACKAGE = Path(__file__).resolve().parent


def warn_data(text: str) -> None:
    """Issue a `DataWarning` attributed to the first caller outside ``easytransfer.data`` (the user's own line).

    However deep inside the data package the warning is raised, it points at the call that built the data.
    """
    frame, level = inspect.currentframe().f_back, 2  # level 2: the caller of warn_data
    while frame is not None and Path(frame.f_code.co_filename).resolve().parent == DATA_PACKAGE:
        frame, level = frame.f_back, level + 1
    del frame  # frames hold references to every local of the stack
    warnings.warn(text, DataWarning, stacklevel=level)


def _split_names(items: pd.DataFrame) -> pd.Series:
    if "split" in items:
        return items["split"]
    return pd.Series(["valid" if v else "train" for v in items["is_valid"]], index=items.index)


def class_counts(items: pd.DataFrame, label_delim: str | None = None, test_items: pd.DataFrame | None = None):
    """Images per class (rows) and split (columns ``train``, ``valid`` and, when there is one, ``test``)."""
    frames = [items.assign(split=_split_names(items))[["label", "split"]]]
    if test_items is not None and len(test_items):
        frames.append(test_items.assign(split="test")[["label", "split"]])
    table = pd.concat(frames, ignore_index=True)
    if label_delim is not None:
        table = table.assign(label=table["label"].astype(str).str.split(label_delim)).explode("label")
        table = table[table["label"].astype(bool)]
    counts = pd.crosstab(table["label"].rename("class"), table["split"].rename("split"))
    columns = [s for s in SPLITS if s in counts.columns or s != "test"]
    return counts.reindex(columns=columns, fill_value=0)


@dataclass
class DataReport:
    """The file check's findings; ``dls.report``. ``print(dls.report)`` shows all of it.

    Attributes:
        excluded: one row per file left out: ``path``, ``label``, ``split``, ``reason``.
        converted: one row per kept file that needs a conversion or has a misleading name: ``path``, ``label``,
            ``note`` (``"CMYK -> RGB"``, ``"EXIF orientation 6 applied"``, ``"PNG content in a .jpg file"`` ...).
        counts: images per class and split, after exclusions.
        messages: everything else worth knowing (paths found by file name, empty class folders, imbalance).
        n_files: files considered.
    """

    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "label", "split", "reason"]))
    converted: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "label", "note"]))
    counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    messages: list[str] = field(default_factory=list)
    n_files: int = 0

    def reasons(self) -> dict[str, str]:
        """``{path: reason}`` of the excluded files."""
        return dict(zip(self.excluded["path"], self.excluded["reason"]))

    def summary(self) -> str:
        """One line: how many files were used, excluded (by reason) and converted."""
        used = self.n_files - len(self.excluded)
        text = f"Using {used} of {self.n_files} image files"
        if len(self.excluded):
            kinds = self.excluded["reason"].str.split(":").str[0].value_counts()
            text += f"; excluded {len(self.excluded)} (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")"
        if len(self.converted):
            text += f"; {self.converted['path'].nunique()} converted or misnamed"
        return text + "."

    @property
    def imbalance(self) -> float | None:
        """Smallest over largest training-class count (1.0 is perfectly balanced)."""
        if self.counts.empty or "train" not in self.counts or self.counts["train"].max() == 0:
            return None
        return float(self.counts["train"].min() / self.counts["train"].max())

    def __str__(self) -> str:
        lines = [self.summary(), "", "Images per class and split:", self.counts.to_string()]
        if len(self.excluded):
            lines += ["", "Excluded files:"]
            lines += [f"  {r.path} [{r.label}, {r.split}]: {r.reason}" for r in self.excluded.itertuples()]
        if len(self.converted):
            lines += ["", "Converted or misnamed (kept):"]
            lines += [f"  {r.path}: {r.note}" for r in self.converted.itertuples()]
        if self.messages:
            lines += ["", "Notes:"] + [f"  - {m}" for m in self.messages]
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))
