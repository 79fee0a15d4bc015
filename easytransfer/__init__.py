"""easytransfer: transfer learning for images in three lines.

>>> from easytransfer import ImageData, transfer_learner
>>> dls = ImageData.from_folder("path/to/images", valid_pct=0.2, seed=42)  # doctest: +SKIP
>>> learn = transfer_learner(dls, "efficientnet_lite0"); learn.fit_frozen(3)  # doctest: +SKIP

The public names are imported when first used (PEP 562), so ``import easytransfer`` and the ``easytransfer``
command's ``--help`` do not load torch and fastai (issue 19: ~10 s per command). `PUBLIC_NAMES` says where each
name lives.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from .version import __version__ as __version__

# public name -> the module that defines it
PUBLIC_NAMES = {
    "set_seed": ".seeding",
    "DetectionData": ".tasks.detection.data",
    "ImageData": ".data.loaders",
    "SegmentationData": ".tasks.segmentation.data",
    "BundleConfig": ".deploy.bundle",
    "Predictor": ".deploy.predictor",
    "ClassifierPredictor": ".tasks.classification.predictor",
    "SegmentationPredictor": ".tasks.segmentation.predictor",
    "DetectionPredictor": ".tasks.detection.predictor",
    "load_model": ".tasks.loading",
    "zero_shot_classifier": ".tasks.classification.predictor",
    "DataError": ".errors",
    "EasyTransferError": ".errors",
    "NoBlockGroupsError": ".errors",
    "UnknownModelError": ".errors",
    "WeightsMismatchError": ".errors",
    "WeightsUnavailableError": ".errors",
    "Calibration": ".evaluate.calibration",
    "ConformalEvaluation": ".evaluate.conformal",
    "ConformalPredictor": ".tasks.classification.prediction_sets",
    "PredictionSet": ".tasks.classification.prediction_sets",
    "Diagnosis": ".train.diagnosis",
    "diagnose": ".train.diagnosis",
    "Interpretation": ".tasks.classification.interpretation",
    "detection_heads": ".tasks.detection.model",
    "ModelSpec": ".models.factory",
    "build_model": ".models.factory",
    "create_model": ".models.factory",
    "describe_model": ".models.factory",
    "get_model_spec": ".models.factory",
    "list_models": ".models.factory",
    "HeadConfig": ".models.heads",
    "split_layer_groups": ".models.layer_groups",
    "segmentation_heads": ".tasks.segmentation.model",
    "HeadSupport": ".tasks.registry",
    "available_heads": ".tasks.registry",
    "BestWeightsCallback": ".train.callbacks",
    "StopOnNaNCallback": ".train.callbacks",
    "DetectionLearner": ".tasks.detection.learner",
    "detection_learner": ".tasks.detection.learner",
    "plot_history": ".train.history",
    "ClassifierLearner": ".tasks.classification.learner",
    "transfer_learner": ".tasks.classification.learner",
    "TransferLearner": ".train.learner",
    "discriminative_lrs": ".train.rates",
    "LRFinderResult": ".train.lr_finder",
    "SegmentationLearner": ".tasks.segmentation.learner",
    "segmentation_learner": ".tasks.segmentation.learner",
}

__all__ = ["__version__", *PUBLIC_NAMES]


def __getattr__(name: str):
    """Import a public name's module on first use (``easytransfer.ImageData``, ``from easytransfer import X``);
    sub-packages too (``easytransfer.models.block_layer_groups`` after ``import easytransfer``)."""
    if name in PUBLIC_NAMES:
        value = getattr(importlib.import_module(PUBLIC_NAMES[name], __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'easytransfer' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PUBLIC_NAMES))


if TYPE_CHECKING:  # the same names, for type checkers and editors
    from .data.loaders import ImageData as ImageData
    from .deploy.bundle import BundleConfig as BundleConfig
    from .deploy.predictor import Predictor as Predictor
    from .errors import DataError as DataError
    from .errors import EasyTransferError as EasyTransferError
    from .errors import NoBlockGroupsError as NoBlockGroupsError
    from .errors import UnknownModelError as UnknownModelError
    from .errors import WeightsMismatchError as WeightsMismatchError
    from .errors import WeightsUnavailableError as WeightsUnavailableError
    from .evaluate.calibration import Calibration as Calibration
    from .evaluate.conformal import ConformalEvaluation as ConformalEvaluation
    from .models.factory import ModelSpec as ModelSpec
    from .models.factory import build_model as build_model
    from .models.factory import create_model as create_model
    from .models.factory import describe_model as describe_model
    from .models.factory import get_model_spec as get_model_spec
    from .models.factory import list_models as list_models
    from .models.heads import HeadConfig as HeadConfig
    from .models.layer_groups import split_layer_groups as split_layer_groups
    from .seeding import set_seed as set_seed
    from .tasks.classification.interpretation import Interpretation as Interpretation
    from .tasks.classification.learner import ClassifierLearner as ClassifierLearner
    from .tasks.classification.learner import transfer_learner as transfer_learner
    from .tasks.classification.prediction_sets import ConformalPredictor as ConformalPredictor
    from .tasks.classification.prediction_sets import PredictionSet as PredictionSet
    from .tasks.classification.predictor import ClassifierPredictor as ClassifierPredictor
    from .tasks.classification.predictor import zero_shot_classifier as zero_shot_classifier
    from .tasks.detection.data import DetectionData as DetectionData
    from .tasks.detection.learner import DetectionLearner as DetectionLearner
    from .tasks.detection.learner import detection_learner as detection_learner
    from .tasks.detection.model import detection_heads as detection_heads
    from .tasks.detection.predictor import DetectionPredictor as DetectionPredictor
    from .tasks.loading import load_model as load_model
    from .tasks.registry import HeadSupport as HeadSupport
    from .tasks.registry import available_heads as available_heads
    from .tasks.segmentation.data import SegmentationData as SegmentationData
    from .tasks.segmentation.learner import SegmentationLearner as SegmentationLearner
    from .tasks.segmentation.learner import segmentation_learner as segmentation_learner
    from .tasks.segmentation.model import segmentation_heads as segmentation_heads
    from .tasks.segmentation.predictor import SegmentationPredictor as SegmentationPredictor
    from .train.callbacks import BestWeightsCallback as BestWeightsCallback
    from .train.callbacks import StopOnNaNCallback as StopOnNaNCallback
    from .train.diagnosis import Diagnosis as Diagnosis
    from .train.diagnosis import diagnose as diagnose
    from .train.history import plot_history as plot_history
    from .train.learner import TransferLearner as TransferLearner
    from .train.lr_finder import LRFinderResult as LRFinderResult
    from .train.rates import discriminative_lrs as discriminative_lrs
