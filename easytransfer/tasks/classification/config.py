"""`ClassificationConfig`: what a classifier's bundle records besides the backbone, head and preprocessing.

>>> ClassificationConfig.from_dict(ClassificationConfig(multilabel=True).to_dict())
ClassificationConfig(multilabel=True, calibration=None, conformal=None, choice=None)
"""

from __future__ import annotations

from dataclasses import dataclass

from ...evaluate.calibration import Calibration
from ...evaluate.conformal import ConformalCalibration
from .choice import RecipeChoice

__all__ = ["ClassificationConfig"]


@dataclass(frozen=True)
class ClassificationConfig:
    """A classifier's task config (the bundle's ``task_config``).

    Attributes:
        multilabel: sigmoid outputs with a threshold instead of a softmax.
        calibration: the `Calibration` of ``learn.calibrate()``, applied to every prediction; ``None``: none.
        conformal: the `ConformalCalibration` of ``learn.conformal()`` (``predict_set``); ``None``: none.
        choice: the frozen stage's `RecipeChoice` (input size and pooling, with every candidate's validation
            figures); the bundle's preprocessing and head already run at it. ``None``: nothing was chosen.
    """

    multilabel: bool = False
    calibration: Calibration | None = None
    conformal: ConformalCalibration | None = None
    choice: RecipeChoice | None = None

    def to_dict(self) -> dict:
        data: dict = {"multilabel": self.multilabel}
        if self.calibration is not None:
            data["calibration"] = self.calibration.to_dict()
        if self.conformal is not None:
            data["conformal"] = self.conformal.to_dict()
        if self.choice is not None:
            data["choice"] = self.choice.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ClassificationConfig:
        multilabel = data.get("multilabel", False)
        if not isinstance(multilabel, bool):
            raise TypeError(f"'multilabel' must be true or false, not {multilabel!r}")
        calibration, conformal, choice = data.get("calibration"), data.get("conformal"), data.get("choice")
        return cls(multilabel=multilabel,
                   calibration=Calibration.from_dict(calibration) if calibration else None,
                   conformal=ConformalCalibration.from_dict(conformal) if conformal else None,
                   choice=RecipeChoice.from_dict(choice) if choice else None)
