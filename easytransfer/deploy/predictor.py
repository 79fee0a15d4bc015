"""Predictors: a model with its classes and preprocessing, from an exported bundle (`load_model`, no pickle) or from
class names (`zero_shot_classifier`); predicting on images, files and folders, evaluating on labelled images."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from fastai.vision.augment import Resize, ResizeMethod
from fastai.vision.core import PILImage
from PIL import Image
from torch import nn

from ..data.arrays import rgb_from_array
from ..data.images import open_rgb, resample_filter, to_rgb
from ..data.loaders import labelled_items
from ..data.sources import candidate_files
from ..devices import predict_batch_size, resolve_device
from ..errors import DataError, EasyTransferError
from ..models.factory import build_model
from ..models.heads import HeadConfig
from ..models.weights import load_state_dict_strict
from ..models.zero_shot import zero_shot_model
from ..progress import progress_bar
from ..runtime import CpuForward, cpu_forward
from ..tasks.classification.config import ClassificationConfig
from ..tasks.classification.interpretation import Interpretation
from ..tasks.classification.prediction_sets import ConformalPredictor, PredictionSet, sets_table
from .bundle import WEIGHTS_NAME, BundleConfig, Preprocessing, read_bundle_weights, write_bundle

__all__ = ["DEFAULT_ZERO_SHOT_ARCH", "Predictor", "zero_shot_classifier"]

DEFAULT_ZERO_SHOT_ARCH = "open_clip:ViT-B-32/openai"


class Predictor:
    """A trained model with its classes and preprocessing, ready to predict; built by `load_model`.

    The preprocessing is the learner's validation pipeline: fastai's ``Resize(size, method="crop")`` (centre
    crop, the model's resize filter), then scaling to [0, 1] and the model's mean and std.

    >>> predictor = load_model("runs/textile-model")  # doctest: +SKIP
    >>> label, probability, probs = predictor.predict("photo.jpg")  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: BundleConfig, threshold: float = 0.5,
                 device: str | torch.device | None = None):
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.config = config
        self._runtime_forward: CpuForward | None = None  # the model in ONNX Runtime, once a large pass made it
        self.vocab = list(config.classes)
        self.multilabel = bool(getattr(config.task_config, "multilabel", False))  # (a subclass may hold another task)
        self.threshold = threshold
        pre = config.preprocessing
        resample = resample_filter(pre.interpolation)
        self._resize = Resize(pre.size, method=ResizeMethod.Crop, resamples=(resample, 0))
        self._mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, config: BundleConfig, *, threshold: float = 0.5,
                    device: str | torch.device | None = None) -> Predictor:
        """The classifier of bundle folder `path` whose `config` was read: built with ``pretrained=False`` and
        the bundle's weights loaded strictly (`load_model` calls it)."""
        # built for the size it was trained at: a ViT's position embeddings depend on it
        model, _ = build_model(config.arch, len(config.classes), pretrained=False, head=config.head,
                               size=config.preprocessing.size, arch_config=config.arch_config)
        state = read_bundle_weights(path, config)
        load_state_dict_strict(model, state, where=repr(str(Path(path) / WEIGHTS_NAME)), arch=config.arch)
        return cls(model, config, threshold=threshold, device=device)

    def preprocess(self, image) -> torch.Tensor:
        """One image as a normalised (3, size, size) tensor: a path, a PIL image, or an array / tensor
        (HxWx3 or a CxHxW tensor; integers in 0..255 or floats in [0, 1], see `rgb_from_array`)."""
        if isinstance(image, (str, os.PathLike)):
            img = open_rgb(image)
        elif isinstance(image, Image.Image):
            image.load()
            img, _ = to_rgb(image)
            img = image.copy() if img is image else img  # never change the caller's object
        else:
            img = rgb_from_array(image)
        img = self._resize(PILImage(img), split_idx=1)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (x - self._mean) / self._std

    def _logits(self, tensors, forward: CpuForward | None = None) -> torch.Tensor:
        """The model's outputs (on the CPU) for preprocessed image tensors, through `forward` when given."""
        x = torch.stack(list(tensors)).to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return (forward or self.model)(x).float().cpu()

    def _pass_forward(self, images: int) -> CpuForward | None:
        """For a pass over `images` images on the CPU: the model in ONNX Runtime where it gives the same outputs
        (`easytransfer.runtime.cpu_forward`), exported on the first such pass and reused by the later ones (a
        predictor's weights do not change); ``None`` (PyTorch) elsewhere."""
        if self.device.type != "cpu":
            return None
        forward = cpu_forward(self.model, images=images)
        if forward.runtime == "torch":  # few images, no ONNX Runtime, or opted out: nothing to export
            return forward
        if self._runtime_forward is None:
            self._runtime_forward = forward
        return self._runtime_forward

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

    def predict_folder(self, path, bs: int | None = None, csv: str | os.PathLike | None = None,
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
            if csv is not None:
                Path(csv).parent.mkdir(parents=True, exist_ok=True)
                table.to_csv(csv, index=False)
            return table
        bs = bs or predict_batch_size(self.device)
        root = Path(path)
        files = [root] if root.is_file() else candidate_files(root)
        rows = []
        batches = [files[i:i + bs] for i in range(0, len(files), bs)]
        forward = self._pass_forward(len(files))
        # decoding in a second thread while torch runs measured slower on 2 cores (they fight for them)
        for batch in progress_bar(batches, enabled=progress and bool(batches)):
            rows.extend(self._predict_loaded(self._load_batch(batch), forward))
        columns = ["path", "label", "probability"] + [f"p_{c}" for c in self.vocab] + ["error"]
        table = pd.DataFrame(rows, columns=columns)
        if csv is not None:
            Path(csv).parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(csv, index=False)
        return table

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

    def evaluate(self, data, *, bs: int | None = None, progress: bool = True) -> dict:
        """Loss, accuracy and macro / weighted F1 on labelled images: the dict ``learn.evaluate`` returns.

        `data` is what `interpret` takes (a folder of class sub-folders, a table, a list of files, a DataLoader).

        >>> load_model("runs/textile-model").evaluate("data/test")  # doctest: +SKIP
        {'n_images': 90, 'loss': 0.41, 'accuracy': 0.87, 'macro_f1': 0.86, 'weighted_f1': 0.86}
        """
        return self.interpret(data, bs=bs, progress=progress).scores()

    def export(self, path: str | os.PathLike) -> Path:
        """Write this predictor's model as a bundle folder (safetensors + JSON) that `load_model` reads.

        >>> zero_shot_classifier(["cat", "dog"]).export("runs/cats-zero-shot")  # doctest: +SKIP
        """
        return write_bundle(path, self.model, self.config)

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
    """A classifier from class names alone (CLIP zero-shot), as a `Predictor`: predict, evaluate, interpret, export.

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
        A `Predictor` whose ``config.head`` is ``HeadConfig("zero_shot")``.

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
    return Predictor(model, config, device=device)
