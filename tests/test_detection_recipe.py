"""A detector's own recipe defaults: SGD with momentum at torchvision's rate, rates halving per group, mAP watched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from fastai.optimizer import SGD
from test_detection import TINY, make_voc, one_thread, quiet  # noqa: F401 (one_thread: autouse)

from easytransfer import DetectionData, detection_learner
from easytransfer.evaluate.box_metrics import average_precision
from easytransfer.tasks.detection.interpretation import detect
from easytransfer.tasks.detection.recipe import DETECTION_DECAY, MeanAveragePrecision, detection_lr


@pytest.fixture
def dls(tmp_path):
    images, annotations, _ = make_voc(tmp_path, n=14)
    return DetectionData.from_voc(images, annotations, size=64, bs=4, valid_pct=0.3, seed=0)


class RatesSeen(Callback):
    """The head's learning rate at every training step."""

    def before_fit(self):
        self.seen = []

    def after_batch(self):
        if self.training:
            self.seen.append(self.opt.hypers[-1]["lr"])


def _lrs(learn) -> list[float]:
    return [float(x) for x in learn.history.filter(like="lr_").iloc[-1]]


def test_a_detector_trains_with_sgd_at_torchvisions_rate_and_watches_map(dls):
    torch.manual_seed(0)
    learn = quiet(detection_learner, dls, "mobilenetv2_100", "fasterrcnn", device="cpu", n_stages=2, **TINY)
    assert learn.default_monitor() == "map50" and learn.wd == 1e-4
    rates = RatesSeen()
    quiet(learn.fit_frozen, 2, cbs=[rates])
    assert isinstance(learn.opt, type(SGD([torch.nn.Parameter(torch.zeros(1))], 0.1)))
    assert learn.opt.hypers[-1]["mom"] == 0.9 and learn.opt.hypers[-1]["wd"] == 1e-4
    history = learn.history
    assert "map50" in history.columns and 0 <= history["map50"].iloc[-1] <= 1
    assert 0.8 * detection_lr(4) < max(rates.seen) <= detection_lr(4)  # bs=4: a peak of 0.005, sampled per step
    learn.unfreeze()
    quiet(learn.fit_discriminative, 1)
    rates = np.asarray(_lrs(learn))
    assert np.allclose(rates[:-1] / rates[1:], DETECTION_DECAY)  # halving from the head down to the stem
    assert learn.fit_start is not None  # the discriminative fit started from the frozen stage's map50


def test_the_map_metric_equals_map_of_an_inference_pass(dls):
    torch.manual_seed(0)
    learn = quiet(detection_learner, dls, "mobilenetv2_100", "fcos", device="cpu", **TINY)
    quiet(learn.fit_frozen, 1, lr=1e-3)
    metric = learn.metrics[0]
    assert isinstance(metric, MeanAveragePrecision) and metric.name == "map50"
    value = learn._validation_value("map50")
    preds, targets = detect(learn.model, learn.dls.valid)
    assert value == pytest.approx(average_precision(targets, preds, dls.classes).map50)
    assert learn.model.training  # the metric's eval pass restored the modes


def test_the_metric_name_is_checked():
    with pytest.raises(ValueError, match="map50"):
        MeanAveragePrecision(["a"], "ap")
