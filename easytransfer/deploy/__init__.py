"""Deployment: the model bundle (safetensors + versioned JSON), the `Predictor` base of every task's predictor,
ONNX and TorchScript."""

from .. import quiet_fastai  # noqa: F401  (first: fastai without torch's jit warning)
from .bundle import BundleConfig as BundleConfig
from .predictor import Predictor as Predictor
