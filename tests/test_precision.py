"""Mixed precision: fastai's MixedPrecision callback on CUDA only; the feature cache uses the same dtype."""

import pytest
import torch
from conftest import make_image_folder
from fastai.callback.fp16 import MixedPrecision

from easytransfer import ImageData, transfer_learner
from easytransfer.train.precision import autocast_dtype, mixed_precision_callback


def test_mixed_precision_is_off_on_the_cpu(tmp_path, capsys):
    dls = ImageData.from_folder(make_image_folder(tmp_path / "images"), valid_pct=0.25, seed=0, bs=4, size=32)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, device="cpu", mixed_precision="fp16")
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs)
    assert "Mixed precision (fp16) is for CUDA devices" in capsys.readouterr().err
    learn.to_bf16()
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs)


def test_precision_names_and_dtypes():
    cuda = torch.device("cuda")
    assert mixed_precision_callback("no", cuda) is None
    assert autocast_dtype([mixed_precision_callback("fp16", cuda)], cuda) == torch.float16
    assert autocast_dtype([mixed_precision_callback("bf16", cuda)], cuda) == torch.bfloat16
    assert autocast_dtype([], cuda) is None
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        mixed_precision_callback("fp8", cuda)
