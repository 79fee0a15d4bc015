"""easytransfer: transfer learning for images in three lines.

>>> from easytransfer import ImageData, transfer_learner
>>> dls = ImageData.from_folder("path/to/images", valid_pct=0.2, seed=42)  # doctest: +SKIP
>>> learn = transfer_learner(dls, "efficientnet_lite0"); learn.fit_frozen(3)  # doctest: +SKIP
"""

from .callbacks import BestWeightsCallback as BestWeightsCallback
from .callbacks import StopOnNaNCallback as StopOnNaNCallback
from .data import ImageData as ImageData
from .diagnosis import Diagnosis as Diagnosis
from .diagnosis import diagnose as diagnose
from .errors import DataError as DataError
from .errors import EasyTransferError as EasyTransferError
from .errors import UnknownModelError as UnknownModelError
from .errors import WeightsMismatchError as WeightsMismatchError
from .errors import WeightsUnavailableError as WeightsUnavailableError
from .history import plot_history as plot_history
from .inference import Predictor as Predictor
from .inference import load_model as load_model
from .interpret import Interpretation as Interpretation
from .learner import TransferLearner as TransferLearner
from .learner import discriminative_lrs as discriminative_lrs
from .learner import transfer_learner as transfer_learner
from .lr_finder import LRFinderResult as LRFinderResult
from .models import ModelSpec as ModelSpec
from .models import build_model as build_model
from .models import create_model as create_model
from .models import describe_model as describe_model
from .models import get_model_spec as get_model_spec
from .models import list_models as list_models
from .splitters import split_layer_groups as split_layer_groups
from .version import __version__ as __version__
