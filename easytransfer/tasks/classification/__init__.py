"""Classification: one label (or several) per image. Registered as the task ``"classification"``."""

from ..registry import Task, TaskDefaults, register_task

TASK = register_task(Task(
    name="classification",
    summary="one label per image (or several: multi-label)",
    data="easytransfer.data.loaders:ImageData",
    learner="easytransfer.tasks.classification.learner:transfer_learner",
    config="easytransfer.tasks.classification.config:ClassificationConfig",
    predictor="easytransfer.tasks.classification.predictor:ClassifierPredictor",
    interpretation="easytransfer.tasks.classification.interpretation:Interpretation",
    heads="easytransfer.tasks.classification.heads:classification_heads",
    defaults=TaskDefaults(bs=16, aug="light", head="linear"),
    cli="easytransfer.tasks.classification.cli",
))
