"""Training: the `TransferLearner`, its schedules, callbacks, checkpoints, LR finder, feature cache and probes."""
