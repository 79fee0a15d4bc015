"""easytransfer: transfer learning for images in three lines.

>>> from easytransfer import ImageData, transfer_learner
>>> dls = ImageData.from_folder("path/to/images", valid_pct=0.2, seed=42)  # doctest: +SKIP
>>> learn = transfer_learner(dls, "efficientnet_lite0"); learn.fit_frozen(3)  # doctest: +SKIP
"""

import warnings

# fastai decorates a few functions with torch.jit.script when it is imported, and torch 2.14 warns about that
# on every `easytransfer` command; importing fastai's layers once here, with that one warning silenced, keeps
# the output clean without hiding the warning from the user's own code.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import fastai.layers  # noqa: F401

from .data.detection import DetectionData as DetectionData
from .data.loaders import ImageData as ImageData
from .data.segmentation import SegmentationData as SegmentationData
from .deploy.bundle import BundleConfig as BundleConfig
from .deploy.predictor import Predictor as Predictor
from .deploy.predictor import load_model as load_model
from .deploy.predictor import zero_shot_classifier as zero_shot_classifier
from .errors import DataError as DataError
from .errors import EasyTransferError as EasyTransferError
from .errors import NoBlockGroupsError as NoBlockGroupsError
from .errors import UnknownModelError as UnknownModelError
from .errors import WeightsMismatchError as WeightsMismatchError
from .errors import WeightsUnavailableError as WeightsUnavailableError
from .evaluate.calibration import Calibration as Calibration
from .evaluate.conformal import ConformalEvaluation as ConformalEvaluation
from .evaluate.conformal_sets import ConformalPredictor as ConformalPredictor
from .evaluate.conformal_sets import PredictionSet as PredictionSet
from .evaluate.diagnosis import Diagnosis as Diagnosis
from .evaluate.diagnosis import diagnose as diagnose
from .evaluate.interpret import Interpretation as Interpretation
from .models.detection import detection_heads as detection_heads
from .models.factory import ModelSpec as ModelSpec
from .models.factory import build_model as build_model
from .models.factory import create_model as create_model
from .models.factory import describe_model as describe_model
from .models.factory import get_model_spec as get_model_spec
from .models.factory import list_models as list_models
from .models.heads import HeadConfig as HeadConfig
from .models.layer_groups import split_layer_groups as split_layer_groups
from .models.segmentation import segmentation_heads as segmentation_heads
from .models.task_heads import HeadSupport as HeadSupport
from .models.task_heads import available_heads as available_heads
from .train.callbacks import BestWeightsCallback as BestWeightsCallback
from .train.callbacks import StopOnNaNCallback as StopOnNaNCallback
from .train.detection import DetectionLearner as DetectionLearner
from .train.detection import detection_learner as detection_learner
from .train.history import plot_history as plot_history
from .train.learner import TransferLearner as TransferLearner
from .train.learner import discriminative_lrs as discriminative_lrs
from .train.learner import transfer_learner as transfer_learner
from .train.lr_finder import LRFinderResult as LRFinderResult
from .train.segmentation import SegmentationLearner as SegmentationLearner
from .train.segmentation import segmentation_learner as segmentation_learner
from .version import __version__ as __version__
