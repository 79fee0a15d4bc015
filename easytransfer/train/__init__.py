"""Training: the `TransferLearner`, its schedules, callbacks, checkpoints, LR finder, feature cache and probes."""

from .. import quiet_fastai  # noqa: F401  (first: fastai without torch's jit warning)
