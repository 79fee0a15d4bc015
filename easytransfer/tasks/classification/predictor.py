"""The classifier's predictor: a bundle's labels and probabilities for images, files and folders; the conformal
prediction sets a calibrated bundle carries; `zero_shot_classifier` (a classifier from class names alone)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ...data.loaders import labelled_items
from ...deploy.bundle import BundleConfig, Preprocessing
from ...deploy.predictor import Predictor, image_files, write_table
from ...devices import predict_batch_size
from ...errors import DataError, EasyTransferError
from ...models.factory import build_model
from ...models.heads import HeadConfig
from ...models.zero_shot import zero_shot_model
from ...progress import progress_bar
from ...runtime import CpuForward
from .config import ClassificationConfig
from .interpretation import Interpretation
from .prediction_sets import ConformalPredictor, PredictionSet, sets_table

__all__ = ["DEFAULT_ZERO_SHOT_ARCH", "ClassifierPredictor", "zero_shot_classifier"]

DEFAULT_ZERO_SHOT_ARCH = "open_clip:ViT-B-32/openai"


class ClassifierPredictor(Predictor):
    """A trained classifier with its classes and preprocessing, ready to predict; `load_model` gives one for a
    classification bundle.

    The preprocessing is the learner's validation pipeline: fastai's ``Resize(size, method="crop")`` (centre
    crop, the model's resize filter), then scaling to [0, 1] and the model's mean and std.

    >>> predictor = load_model("runs/textile-model")  # doctest: +SKIP
    >>> label, probability, probs = predictor.predict("photo.jpg")  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: BundleConfig, *, threshold: float = 0.5,
                 device: str | torch.device | None = None):
        super().__init__(model, config, threshold=threshold, device=device)
        self.multilabel = bool(config.task_config.multilabel)

    @classmethod
    def build_model(cls, config: BundleConfig) -> nn.Module:
        """The classifier `config` describes, untrained (``pretrained=False``), at the size it was trained at (a
        ViT's position embeddings depend on it).

        >>> ClassifierPredictor.build_model(read_model_config("runs/m"))  # doctest: +SKIP
        """
        model, _ = build_model(config.arch, len(config.classes), pretrained=False, head=config.head,
                               size=config.preprocessing.size, arch_config=config.arch_config)
        return model

    def _probabilities(self, tensors, forward: CpuForward | None = None) -> torch.Tensor:
        """The model's probabilities for preprocessed image tensors (softmax, or sigmoid for multi-label); a
        bundle exported after ``learn.calibrate()`` gives the calibrated ones."""
        logits = self._logits(tensors, forward)
        return logits.sigmoid() if self.multilabel else self._softmax(logits)

    def _softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Single-label probabilities of logits: the bundle's calibration when it has one, else the softmax."""
        if self.config.task_config.calibration is None:
            return logits.softmax(dim=1)
        return torch.from_numpy(self.config.task_config.calibration.probabilities(logits.numpy())).float()

    def conformal_predictor(self) -> ConformalPredictor:
        """The `ConformalPredictor` of the sets the bundle carries (``learn.conformal(...)`` before `export`).

        >>> load_model("runs/textile-model").conformal_predictor().evaluate("data/test").coverage  # doctest: +SKIP
        0.91
        """
        if self.config.task_config.conformal is None:
            raise EasyTransferError("This model bundle has no conformal calibration; call learn.conformal(calib) "
                                    "before learn.export(path) to give it prediction sets.")
        return ConformalPredictor(self.config.task_config.conformal, self.vocab,
                                  probabilities=lambda images: self.predict_batch(images).numpy(),
                                  interpret=lambda data: self.interpret(data, progress=False),
                                  folder_probabilities=self._folder_probabilities)

    def predict_set(self, image, alpha: float | None = None) -> PredictionSet:
        """The conformal set of labels for one image (most probable first), from the bundle's calibration scores.

        Args:
            alpha: the error rate (default the one given to ``learn.conformal``); any value works, the thresholds
                follow from the stored scores.

        >>> load_model("runs/textile-model").predict_set("photo.jpg", alpha=0.1).labels  # doctest: +SKIP
        ['stain', 'hole']
        """
        return self.conformal_predictor().predict(image, alpha)

    def _folder_probabilities(self, path) -> tuple[list[str], np.ndarray]:
        table = self.predict_folder(path, progress=False)
        table = table[table["error"].isna()]
        return table["path"].tolist(), table[[f"p_{c}" for c in self.vocab]].to_numpy(dtype=float)

    def _labels_above_threshold(self, probs: torch.Tensor) -> list[str]:
        return [self.vocab[i] for i in torch.nonzero(probs > self.threshold).flatten().tolist()]

    def predict_batch(self, images: Iterable) -> torch.Tensor:
        """Probabilities (images x classes) for a batch of images."""
        return self._probabilities(self.preprocess(im) for im in images)

    def predict(self, image):
        """``(label, probability, probs)`` for one image: a path, a PIL image or an array (0..255 or [0, 1]).

        `probs` holds every class's probability in vocabulary order (``predictor.vocab``), as fastai's
        ``learn.predict(image)[2]``. Multi-label: ``(labels above the threshold, their probabilities, probs)``.
        """
        probs = self.predict_batch([image])[0]
        if self.multilabel:
            return self._labels_above_threshold(probs), probs[probs > self.threshold], probs
        i = int(probs.argmax())
        return self.vocab[i], float(probs[i]), probs

    def predict_folder(self, path, *, bs: int | None = None, csv: str | os.PathLike | None = None,
                       progress: bool = True, alpha: float | None = None) -> pd.DataFrame:
        """Predict every image under `path` (recursively), streaming in batches; optionally write a CSV.

        Returns one row per file: ``path``, ``label``, ``probability`` and one column per class. Files that
        cannot be read get an ``error`` and no prediction; they do not stop the run.

        Args:
            path: a folder (searched recursively) or one image file.
            bs: images per forward pass (default `predict_batch_size`: 8 on the CPU, 64 on CUDA).
            csv: also write the table to this CSV file.
            progress: show a progress bar (in a notebook, or on standard error in a terminal; `progress_bar`).
            alpha: also give each image its conformal set (``set``, ``set_size`` columns) at this error rate,
                from the bundle's calibration scores (``learn.conformal`` before `export`).
        """
        if alpha is not None:
            cp = self.conformal_predictor()
            table = self.predict_folder(path, bs=bs, progress=progress)
            good = table[table["error"].isna()]
            sets = sets_table(good["path"], good[[f"p_{c}" for c in self.vocab]].to_numpy(dtype=float),
                              cp.calibration, self.vocab, alpha)
            table = table.merge(sets[["path", "set", "set_size"]], on="path", how="left")
            return write_table(table, csv)
        bs = bs or predict_batch_size(self.device)
        files = image_files(path)
        rows = []
        batches = [files[i:i + bs] for i in range(0, len(files), bs)]
        forward = self._pass_forward(len(files))
        # decoding in a second thread while torch runs measured slower on 2 cores (they fight for them)
        for batch in progress_bar(batches, enabled=progress and bool(batches)):
            rows.extend(self._predict_loaded(self._load_batch(batch), forward))
        columns = ["path", "label", "probability"] + [f"p_{c}" for c in self.vocab] + ["error"]
        return write_table(pd.DataFrame(rows, columns=columns), csv)

    def interpret(self, data, *, bs: int | None = None, progress: bool = True) -> Interpretation:
        """Predictions on labelled images, computed once, as the `Interpretation` ``learn.interpret`` gives.

        Args:
            data: a folder of class sub-folders, a table with ``path`` and ``label`` columns, a list of files
                (labelled by their parent folder's name), or a fastai DataLoader over such a table
                (``dls.valid``, ``dls.labelled_dl(...)``). Every image goes through this predictor's own
                preprocessing (`preprocess`), as in `predict`.
            bs: images per forward pass (default `predict_batch_size`).
            progress: show a progress bar.

        Returns:
            The `Interpretation`: ``confusion_matrix()``, ``top_losses()``, ``per_class()``, plots; the losses are
            the cross-entropy of the model's outputs, as a learner's.

        >>> interp = load_model("runs/textile-model").interpret("data/test"); interp.per_class()  # doctest: +SKIP
        """
        if self.multilabel:
            raise EasyTransferError("interpret and evaluate take single-label models; for a multi-label model use "
                                    "learn.interpret() / learn.evaluate() on the learner.")
        items = _labelled_table(data)
        index = {c: i for i, c in enumerate(self.vocab)}
        unseen = sorted(set(items["label"].astype(str)) - set(index))
        if unseen:
            raise DataError(f"Labels {unseen} are not among this model's classes {self.vocab}; remove those images "
                            "or give a model that knows them.")
        targs = torch.tensor([index[str(label)] for label in items["label"]], dtype=torch.long)
        bs = bs or predict_batch_size(self.device)
        paths = items["path"].tolist()
        batches = [paths[i:i + bs] for i in range(0, len(paths), bs)]
        forward = self._pass_forward(len(paths))
        logits = torch.cat([self._logits((self.preprocess(p) for p in batch), forward)
                            for batch in progress_bar(batches, enabled=progress)])
        if self.config.task_config.calibration is None:
            losses = F.cross_entropy(logits, targs, reduction="none")
            return Interpretation.from_probabilities(logits.softmax(dim=1), targs, self.vocab, items=items,
                                                     losses=losses)
        # calibrated: the losses are those of the calibrated probabilities (from_probabilities' default)
        return Interpretation.from_probabilities(self._softmax(logits), targs, self.vocab, items=items)

    def _load_batch(self, files):
        out = []
        for f in files:
            try:
                out.append((str(f), self.preprocess(f), None))
            except Exception as e:  # a broken file is reported in its row, the run goes on
                out.append((str(f), None, f"{type(e).__name__}: {e}"))
        return out

    def _predict_loaded(self, loaded, forward: CpuForward | None = None):
        good = [x for _, x, err in loaded if err is None]
        probs = iter(self._probabilities(good, forward) if good else ())
        rows = []
        for p, _, err in loaded:
            if err is not None:
                rows.append([p, None, np.nan] + [np.nan] * len(self.vocab) + [err])
                continue
            pr = next(probs)
            if self.multilabel:
                label, probability = " ".join(self._labels_above_threshold(pr)), float(pr.max())
            else:
                i = int(pr.argmax())
                label, probability = self.vocab[i], float(pr[i])
            rows.append([p, label, probability] + [float(v) for v in pr] + [None])
        return rows


def _labelled_table(data) -> pd.DataFrame:
    """``path`` and ``label`` of the labelled images `data` names (see `Predictor.interpret`)."""
    if isinstance(data, (str, os.PathLike, pd.DataFrame)):
        return labelled_items(data)
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (str, os.PathLike)):
        return labelled_items(list(data), [Path(p).parent.name for p in data])
    table = getattr(data, "items", None)  # a fastai DataLoader of an ImageData: its table of items
    if isinstance(table, pd.DataFrame):
        return labelled_items(table)
    raise TypeError(f"Cannot read labelled images from a {type(data).__name__}; give a folder of class sub-folders, "
                    "a table with 'path' and 'label' columns, a list of files, or a DataLoader of an ImageData.")


def zero_shot_classifier(classes: Sequence[str], arch: str = DEFAULT_ZERO_SHOT_ARCH, *,
                         templates: Sequence[str] | None = None,
                         descriptions: Mapping[str, Sequence[str] | str] | None = None,
                         device: str | torch.device | None = None) -> Predictor:
    """A classifier from class names alone (CLIP zero-shot), as a `ClassifierPredictor`: predict, evaluate, interpret,
    export.

    Each class's embedding is the normalised mean of CLIP text embeddings of its prompts (the templates filled
    with the class name, or its own descriptions); an image's probabilities are
    ``softmax(logit_scale * cosine(image embedding, class embeddings))``. The model is the image tower with a
    Linear head holding ``logit_scale * class embeddings``, so `export` writes an ordinary bundle (no text tower)
    that `load_model` reads.

    Args:
        classes: class names, in output order (``_`` and ``-`` read as spaces in the prompts).
        arch: an open_clip name: ``"open_clip:ViT-B-32/openai"`` (downloaded once when online),
            ``"open_clip:hf-hub:ORG/REPO"``, or ``"open_clip:local-dir:PATH"`` (an open_clip folder; offline).
        templates: prompt templates with ``{}`` for the class name; default `DEFAULT_TEMPLATES` (CLIP paper).
        descriptions: class -> texts describing it, used instead of the templates for that class.
        device: where the model runs (``None``: CUDA when available, else the CPU).

    Returns:
        A `ClassifierPredictor` whose ``config.head`` is ``HeadConfig("zero_shot")``.

    Raises:
        WeightsUnavailableError: offline, for a name whose weights are not on this machine (within seconds).

    >>> classifier = zero_shot_classifier(["cat", "dog"], "open_clip:local-dir:clip-b32")  # doctest: +SKIP
    >>> label, probability, probs = classifier.predict("photo.jpg")  # doctest: +SKIP
    """
    model, spec = zero_shot_model(arch, classes, templates=templates, descriptions=descriptions, device=device)
    config = BundleConfig(
        arch=spec.name, source=spec.source, source_arch=spec.arch, classes=tuple(str(c) for c in classes),
        head=HeadConfig("zero_shot"), task_config=ClassificationConfig(),
        preprocessing=Preprocessing(spec.size, spec.interpolation, tuple(spec.mean), tuple(spec.std)),
        arch_config=spec.arch_config,
    )
    return ClassifierPredictor(model, config, device=device)
