"""Evaluation: metrics, the `Interpretation` of a model's predictions, the diagnosis and the HTML report."""

from .. import quiet_fastai  # noqa: F401  (first: fastai without torch's jit warning)
