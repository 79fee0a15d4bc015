"""Evaluation: metrics, the `Interpretation` of a model's predictions, the diagnosis and the HTML report."""
