"""Models: names to backbones with a new head (`create_model`) or as feature bodies (`create_features`), their
metadata (`ModelSpec`), weights, layer groups."""

from .factory import ModelSpec as ModelSpec
from .factory import build_model as build_model
from .factory import create_features as create_features
from .factory import create_model as create_model
from .factory import describe_model as describe_model
from .factory import get_model_spec as get_model_spec
from .factory import list_models as list_models
from .factory import resolve_arch as resolve_arch
from .feature_body import FeatureBody as FeatureBody
from .feature_body import NoMultiScaleFeaturesError as NoMultiScaleFeaturesError
from .heads import HeadConfig as HeadConfig
from .heads import KNNHead as KNNHead
from .heads import PrototypeHead as PrototypeHead
from .layer_groups import LayerGroups as LayerGroups
from .layer_groups import block_layer_groups as block_layer_groups
from .layer_groups import feature_layer_groups as feature_layer_groups
from .layer_groups import split_layer_groups as split_layer_groups
