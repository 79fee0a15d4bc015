"""`RecipeDefaults`: what a fit uses when the user does not say, answered per task by each task's learner.

The recipe's defaults are the product: a classifier trains its new linear head with Adam at 3e-3 and fine-tunes
at 1e-3 falling tenfold per layer group, watching the validation loss; a detector overrides these (SGD at
torchvision's rate, halving per group, watching mAP@0.5: `easytransfer.tasks.detection.recipe`), and a classifier's
frozen-stage choice may change the decay and the epochs. `TransferLearner` mixes this in; its fits ask these methods
whenever an argument is left at ``None``.

>>> RecipeDefaults().default_monitor(), RecipeDefaults().default_head_lr(), RecipeDefaults().default_lr_max()
('valid_loss', 0.003, 0.001)
"""

from __future__ import annotations

from .rates import DEFAULT_DECAY, DEFAULT_HEAD_LR, DEFAULT_LR_MAX, DEFAULT_TUNE_EPOCHS

__all__ = ["RecipeDefaults"]


class RecipeDefaults:
    """The defaults of the recipe's fits; a task's learner overrides the ones its task needs."""

    def default_decay(self) -> float:
        """The ratio between neighbouring layer groups' rates when a fit is not given one: `DEFAULT_DECAY`."""
        return DEFAULT_DECAY

    def default_epochs(self) -> int:
        """The epochs `fit_discriminative` runs when not given a number: `DEFAULT_TUNE_EPOCHS`."""
        return DEFAULT_TUNE_EPOCHS

    def default_head_lr(self) -> float:
        """`fit_frozen`'s rate (and `fit_gradual`'s stage 0's) when not given one: `DEFAULT_HEAD_LR`."""
        return DEFAULT_HEAD_LR

    def default_lr_max(self) -> float:
        """The head's rate of `fit_discriminative` (`fine_tune`, `fit_gradual`) when not given: `DEFAULT_LR_MAX`."""
        return DEFAULT_LR_MAX

    def default_monitor(self) -> str:
        """What early stopping, best-weight restore and `fine_tune`'s choice watch when not told."""
        return "valid_loss"
