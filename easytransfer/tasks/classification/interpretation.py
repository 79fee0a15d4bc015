"""Interpretation of a trained classifier: predictions computed once, then every question answered from them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.interpret import Interpretation as FastaiInterpretation
from matplotlib.figure import Figure
from PIL import Image

from ...data.images import open_rgb
from ...evaluate.calibration import ECE_BINS, reliability_bins
from ...evaluate.interpretation import ReportSection
from ...evaluate.metrics import confusion_matrix, multilabel_confusion_matrix, per_class_report

__all__ = ["ClassReport", "Interpretation", "as_dataloader", "draw_matrix"]

MULTILABEL_THRESHOLD = 0.5
RECALL_GAP = 0.25  # a class whose recall is this far below the overall accuracy is called out


@dataclass(frozen=True)
class ClassReport:
    """The per-class table and the warnings about classes the average hides, shown once wherever it is displayed.

    ``print(report)`` and the REPL show it as text; a notebook shows it as an HTML table (``_repr_html_``).

    >>> report = ClassReport(pd.DataFrame({"recall": [0.5]}, index=["cat"]), ("Class 'cat' is weak.",))
    >>> print(report)
         recall
    cat  0.5000
    Class 'cat' is weak.
    """

    table: pd.DataFrame
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "\n".join([self.table.to_string(float_format=lambda v: f"{v:.4f}"), *self.warnings])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        notes = "".join(f"<p>{html.escape(w)}</p>" for w in self.warnings)
        return self.table.to_html(float_format=lambda v: f"{v:.4f}") + notes


class Interpretation(FastaiInterpretation):
    """Predictions of a model on one set of labelled images, computed once and kept as numpy arrays.

    Made by `from_learner` (a learner and a DataLoader) or `from_probabilities` (predictions made elsewhere: a
    `Predictor`'s, a zero-shot classifier's), the same tables and plots either way.

    Attributes:
        probs: (items, classes) probabilities.
        targs: true class index per item (multi-label: a 0/1 array of shape (items, labels)).
        preds: predicted class index per item (multi-label: 0/1, probability above `threshold`).
        losses: loss per item.
        vocab: class names.
        multilabel: whether the data is multi-label.
        items: the table of the items (``path`` and ``label`` columns), when known.
        data_name: which images these are (``"validation set"``, ``"test split"``, a folder), when known.

    >>> interp = learn.interpret()  # doctest: +SKIP
    >>> interp.per_class(); interp.plot_confusion_matrix(); interp.plot_top_losses(9)  # doctest: +SKIP
    """

    data_name: str | None = None

    def __init__(self, learn, dl, probs: torch.Tensor, targs: torch.Tensor, losses: torch.Tensor,
                 threshold: float = MULTILABEL_THRESHOLD, *, vocab=None, items: pd.DataFrame | None = None):
        super().__init__(learn, dl, losses)
        self.vocab = [str(v) for v in (vocab if vocab is not None else learn.dls.vocab)]
        dl_items = getattr(dl, "items", None)
        self.items = items if items is not None else (dl_items if isinstance(dl_items, pd.DataFrame) else None)
        self.probs = probs.float().numpy()
        targs = targs.numpy()
        self.multilabel = targs.ndim == 2
        self.threshold = threshold
        if self.multilabel:
            self.targs = targs.astype(int)
            self.preds = (self.probs > threshold).astype(int)
        else:
            self.targs = targs.astype(int)
            self.preds = self.probs.argmax(axis=1)
        losses = losses.float().numpy()
        self.losses = losses.reshape(len(self.probs), -1).mean(1) if losses.size != len(self.probs) else losses

    @classmethod
    def from_learner(cls, learn, dl=None, tta: bool = False, n_tta: int = 4) -> Interpretation:
        """Run inference once on `dl`: the validation set by default, any DataLoader, a folder of class
        sub-folders, a table with ``path`` and ``label`` columns, or a list of files (labelled by their parent
        folder's name).

        ``tta=True`` averages `n_tta` augmented passes with the plain one (fastai's `tta`); the losses are then
        computed from those averaged probabilities.
        """
        dl = as_dataloader(learn, dl)
        if not tta:
            probs, targs, losses = learn.get_preds(dl=dl, with_loss=True)
            if getattr(learn, "calibration", None) is not None:  # fastai's losses are of the raw logits
                losses = _losses_from_probs(probs, targs)
            return cls(learn, dl, probs, targs, losses)
        probs, targs = learn.tta(dl=dl, n=n_tta)
        return cls(learn, dl, probs, targs, _losses_from_probs(probs, targs))

    @classmethod
    def from_probabilities(cls, probs: torch.Tensor, targs: torch.Tensor, vocab, *, items: pd.DataFrame | None = None,
                           losses: torch.Tensor | None = None) -> Interpretation:
        """The interpretation of predictions made without a learner (a `Predictor`'s).

        Args:
            probs: (items, classes) probabilities; targs: true class index per item.
            vocab: class names, in the order of the columns of `probs`.
            items: the items' table (``path``, ``label``), for `top_losses` and `plot_top_losses`.
            losses: loss per item; default the cross-entropy of `probs`.

        >>> interp = Interpretation.from_probabilities(torch.tensor([[0.9, 0.1], [0.4, 0.6]]), torch.tensor([0, 0]),
        ...                                            ["cat", "dog"])
        >>> interp.accuracy, interp.most_confused().values.tolist()
        (0.5, [['cat', 'dog', 1]])
        """
        losses = losses if losses is not None else _losses_from_probs(probs, targs)
        return cls(None, None, probs, targs, losses, vocab=vocab, items=items)

    # ------------------------------------------------------------------------------------------------ numbers

    @property
    def accuracy(self) -> float:
        """Share of items predicted right (multi-label: of item-label decisions)."""
        return float((self.preds == self.targs).mean())

    def scores(self) -> dict:
        """Number of images, mean loss, accuracy and macro / weighted F1: what ``evaluate`` returns.

        >>> interp = Interpretation.from_probabilities(torch.tensor([[0.9, 0.1]]), torch.tensor([0]), ["a", "b"])
        >>> scores = interp.scores(); scores["n_images"], round(scores["loss"], 4), scores["accuracy"]
        (1, 0.1054, 1.0)
        """
        table = self.per_class()
        return {"n_images": len(self.losses), "loss": float(self.losses.mean()), "accuracy": self.accuracy,
                "macro_f1": float(table.loc["macro avg", "f1"]), "weighted_f1": float(table.loc["weighted avg", "f1"])}

    def confusion_matrix(self) -> np.ndarray:
        """Counts, rows = actual class, columns = predicted class; multi-label: (labels, 2, 2) per label."""
        if self.multilabel:
            return multilabel_confusion_matrix(self.targs, self.preds)
        return confusion_matrix(self.targs, self.preds, len(self.vocab))

    def per_class(self) -> pd.DataFrame:
        """Precision, recall, F1, support and accuracy per class (or label), with macro and weighted averages."""
        return per_class_report(self.targs, self.preds, self.vocab)

    def most_confused(self, min_val: int = 1) -> pd.DataFrame:
        """Pairs (actual, predicted) mistaken at least `min_val` times, most frequent first.

        Multi-label: per label, the missed positives (``predicted`` is "(missed)") and false alarms.
        """
        if self.multilabel:
            mcm = self.confusion_matrix()
            rows = [(lab, "(missed)", int(m[1, 0])) for lab, m in zip(self.vocab, mcm)]
            rows += [("(absent)", lab, int(m[0, 1])) for lab, m in zip(self.vocab, mcm)]
        else:
            cm = self.confusion_matrix()
            rows = [(self.vocab[i], self.vocab[j], int(cm[i, j])) for i in range(len(cm)) for j in range(len(cm))
                    if i != j]
        table = pd.DataFrame(rows, columns=["actual", "predicted", "count"])
        table = table[table["count"] >= min_val].sort_values("count", ascending=False, kind="stable")
        return table.reset_index(drop=True)

    def top_losses(self, k: int | None = None) -> pd.DataFrame:
        """The `k` items with the highest loss: index in the DataLoader, file, actual, predicted, loss, p(actual)."""
        order = np.argsort(-self.losses, kind="stable")[: len(self.losses) if k is None else k]
        rows = []
        for i in order:
            if self.multilabel:
                actual = " ".join(self.vocab[j] for j in np.flatnonzero(self.targs[i])) or "(none)"
                predicted = " ".join(self.vocab[j] for j in np.flatnonzero(self.preds[i])) or "(none)"
                p_actual = float(np.where(self.targs[i] == 1, self.probs[i], 1 - self.probs[i]).mean())
            else:
                actual, predicted = self.vocab[self.targs[i]], self.vocab[self.preds[i]]
                p_actual = float(self.probs[i, self.targs[i]])
            rows.append((int(i), self._item_path(i), actual, predicted, float(self.losses[i]), p_actual))
        return pd.DataFrame(rows, columns=["index", "path", "actual", "predicted", "loss", "p_actual"])

    def warnings(self) -> list[str]:
        """Classes whose recall is far below the overall accuracy (the average hides them), in plain words."""
        if self.multilabel or not len(self.targs):
            return []
        table = self.per_class().iloc[: len(self.vocab)]
        overall, total = self.accuracy, table["support"].sum()
        out = []
        for name, row in table.iterrows():
            if row["support"] > 0 and row["recall"] < overall - RECALL_GAP:
                share = row["support"] / total
                fix = (f"add images of {name!r}, or try balance='weights'" if share < 0.5 / len(self.vocab)
                       else f"look at its top losses and add images of {name!r}")
                out.append(f"Class {name!r} ({share:.0%} of these images) has recall {row['recall']:.0%} against "
                           f"{overall:.0%} overall accuracy: the overall figure hides it; {fix}.")
        return out

    def calibration_error(self, n_bins: int = ECE_BINS) -> float:
        """Expected calibration error (ECE) of these predictions: the images are put in `n_bins` equal-width bins
        of top-class probability (15, as Guo et al. 2017), and the gaps between each bin's accuracy and its mean
        probability are averaged, weighted by the bin's share of images. 0.0 is calibrated; 0.1 means the
        probabilities are off by 10 points on average (above the accuracy: over-confident).

        >>> interp = Interpretation.from_probabilities(torch.tensor([[0.9, 0.1], [0.8, 0.2]]), torch.tensor([0, 1]),
        ...                                            ["a", "b"])
        >>> round(interp.calibration_error(), 4)  # bins of 0.9 (right: gap 0.1) and 0.8 (wrong: gap 0.8)
        0.45
        """
        self._check_single_label("calibration_error")
        return reliability_bins(self.probs, self.targs, n_bins).ece

    def plot_calibration(self, before: Interpretation | None = None, n_bins: int = ECE_BINS, ax=None) -> Figure:
        """Reliability diagram: accuracy against mean top-class probability per bin, the diagonal being perfect
        calibration; bars below it are over-confident. `before`: another interpretation (the same images before
        ``learn.calibrate()``) drawn beside it, each labelled with its ECE.

        >>> after = learn.calibrate("data/calib").interpret("data/test")  # doctest: +SKIP
        >>> after.plot_calibration(before=before)  # doctest: +SKIP
        """
        self._check_single_label("plot_calibration")
        fig = Figure(figsize=(4.5, 4.5)) if ax is None else ax.figure
        ax = fig.add_subplot() if ax is None else ax
        curves = ([("before", before)] if before is not None else []) + [("after" if before is not None else "model",
                                                                          self)]
        width = 1.0 / n_bins
        for k, (name, interp) in enumerate(curves):
            bins = reliability_bins(interp.probs, interp.targs, n_bins)
            full = bins.counts > 0
            shift = (k - (len(curves) - 1) / 2) * width / len(curves)
            ax.bar(bins.edges[:-1][full] + width / 2 + shift, bins.accuracy[full], width=width / len(curves),
                   alpha=0.7, label=f"{name} (ECE {bins.ece:.3f})")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("Top-class probability")
        ax.set_ylabel("Accuracy")
        ax.set_title(f"Reliability diagram ({n_bins} bins)")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        return fig

    def _check_single_label(self, what: str) -> None:
        if self.multilabel:
            raise ValueError(f"{what}() is for single-label predictions; these are multi-label (each label's "
                             "probability is a separate yes / no).")

    def report(self) -> ClassReport:
        """The per-class table, followed by any warning about a hidden weak class, as a `ClassReport`.

        Nothing is printed: a notebook shows the returned report once (as a table), ``print(interp.report())``
        shows it as text.
        """
        return ClassReport(self.per_class(), tuple(self.warnings()))

    # ------------------------------------------------------------------------------------------------- plots

    def plot_confusion_matrix(self, normalize: bool = False, ax=None, cmap: str = "Blues") -> Figure:
        """The confusion matrix as a Figure: counts, or with ``normalize=True`` each row as recall.

        Multi-label data gets one small 2x2 matrix per label (absent / present).
        """
        if self.multilabel:
            return self._plot_multilabel_matrices(normalize, cmap)
        cm = self.confusion_matrix().astype(float)
        if normalize:
            cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        if ax is None:
            n = len(self.vocab)
            fig = Figure(figsize=(max(4, 0.6 * n + 2), max(4, 0.6 * n + 2)))
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        draw_matrix(ax, cm, self.vocab, self.vocab, normalize, cmap)
        ax.set_title("Confusion matrix" + (" (row-normalised: recall)" if normalize else ""))
        fig.tight_layout()
        return fig

    def _plot_multilabel_matrices(self, normalize: bool, cmap: str) -> Figure:
        mcm = self.confusion_matrix().astype(float)
        n = len(self.vocab)
        ncols = min(4, n)
        nrows = math.ceil(n / ncols)
        fig = Figure(figsize=(3 * ncols, 3 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, label, cm in zip(axes, self.vocab, mcm):
            if normalize:
                cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            draw_matrix(ax, cm, ["absent", "present"], ["absent", "present"], normalize, cmap)
            ax.set_title(label)
        for ax in axes[n:]:
            ax.axis("off")
        fig.tight_layout()
        return fig

    def plot_top_losses(self, k: int = 9, ncols: int = 3) -> Figure:
        """The `k` highest-loss images in a grid, titled predicted / actual and loss / probability of the actual.

        Each image is shown as the model saw it: the centre square of the photo (the validation resize crops the
        longer side), not the whole photo.
        """
        top = self.top_losses(k)
        nrows = max(1, math.ceil(len(top) / ncols))
        fig = Figure(figsize=(3.2 * ncols, 3.4 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, row in zip(axes, top.itertuples()):
            ax.imshow(self._item_image(row.index))
            ax.set_title(f"{row.predicted} / {row.actual}\n{row.loss:.2f} / {row.p_actual:.2f}", fontsize=9)
        for ax in axes:
            ax.axis("off")
        fig.suptitle("predicted / actual, loss / probability of actual (centre crop: what the model saw)")
        fig.tight_layout()
        return fig

    # -------------------------------------------------------------------------------------------- the items

    def report_sections(self, top_k: int = 9, learn=None) -> list[ReportSection]:
        """This interpretation's sections of the HTML run report (`classification_sections`; `TaskInterpretation`).

        >>> [s.key for s in learn.interpret().report_sections(9, learn)]  # doctest: +SKIP
        ['confusion-matrix', 'top-losses', 'per-class', 'calibration', 'conformal']
        """
        from .report import classification_sections

        return classification_sections(self, top_k, learn)

    def _item_path(self, i: int) -> str | None:
        if self.items is not None and "path" in self.items:
            return str(self.items["path"].iloc[i])
        return None

    def _item_image(self, i: int, size: int = 256) -> np.ndarray:
        path = self._item_path(i)
        if path is not None:
            img = open_rgb(path)
        else:
            img = self.dl.dataset[i][0]
            img = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
        side = min(img.size)  # the centre square, as the validation transform (Resize, method crop) takes it
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))
        img.thumbnail((size, size))
        return np.asarray(img)


def draw_matrix(ax, cm, rows, cols, normalize: bool, cmap: str) -> None:
    """Draw matrix `cm` (rows = actual, columns = predicted) on `ax`, each cell labelled with its value."""
    ax.imshow(cm, cmap=cmap, vmin=0)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(len(rows)):
        for j in range(len(cols)):
            text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", color="white" if cm[i, j] > threshold else "black")


def _losses_from_probs(probs: torch.Tensor, targs: torch.Tensor) -> torch.Tensor:
    """Per-item cross-entropy (or mean binary cross-entropy for multi-label) of already-averaged probabilities."""
    probs = probs.float().clamp(1e-7, 1 - 1e-7)
    if targs.ndim == 2:
        t = targs.float()
        return -(t * probs.log() + (1 - t) * (1 - probs).log()).mean(1)
    return -probs.gather(1, targs.long()[:, None]).squeeze(1).log()


def as_dataloader(learn, dl):
    """The DataLoader `dl` names: the validation set (``None``), a dataset index, a DataLoader as given, or one
    built by ``learn.dls.labelled_dl`` from a folder of class sub-folders, a table with ``path`` and ``label``
    columns, or a list of files (labelled by their parent folder's name).

    >>> as_dataloader(learn, pd.DataFrame({"path": ["a/cat/1.jpg"], "label": ["cat"]}))  # doctest: +SKIP
    """
    if dl is None:
        return learn.dls.valid
    if isinstance(dl, int):
        return learn.dls[dl]
    if isinstance(dl, (str, os.PathLike, pd.DataFrame)):
        return learn.dls.labelled_dl(dl)
    if isinstance(dl, (list, tuple)) and dl and isinstance(dl[0], (str, os.PathLike)):
        return learn.dls.labelled_dl(list(dl), labels=[Path(p).parent.name for p in dl])
    return dl
