"""Deployment: the model bundle (safetensors + versioned JSON), the `Predictor`, ONNX and TorchScript."""

from .bundle import BundleConfig as BundleConfig
from .predictor import Predictor as Predictor
from .predictor import load_model as load_model
