"""Training: the recipe (`TransferLearner`), its rates, callbacks, checkpoints, LR finder, feature cache, history."""

from .. import quiet_fastai  # noqa: F401  (first: fastai without torch's jit warning)
