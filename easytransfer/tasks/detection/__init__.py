"""Object detection: boxes around objects, each with a class. Registered as the task ``"detection"``."""

from ..registry import Task, TaskDefaults, register_task

TASK = register_task(Task(
    name="detection",
    summary="boxes around objects, each with a class and a score",
    data="easytransfer.tasks.detection.data:DetectionData",
    learner="easytransfer.tasks.detection.learner:detection_learner",
    config="easytransfer.tasks.detection.model:DetectionConfig",
    predictor="easytransfer.tasks.detection.predictor:DetectionPredictor",
    interpretation="easytransfer.tasks.detection.interpretation:DetectionInterpretation",
    heads="easytransfer.tasks.detection.model:detection_heads",
    defaults=TaskDefaults(bs=8, aug="flips", head="fasterrcnn"),
    cli="easytransfer.tasks.detection.cli",
))
