"""Semantic segmentation: a class for every pixel. Registered as the task ``"segmentation"``."""

from ..registry import Task, TaskDefaults, register_task

TASK = register_task(Task(
    name="segmentation",
    summary="a class for every pixel (a mask)",
    data="easytransfer.tasks.segmentation.data:SegmentationData",
    learner="easytransfer.tasks.segmentation.learner:segmentation_learner",
    config="easytransfer.tasks.segmentation.model:SegmentationConfig",
    predictor="easytransfer.tasks.segmentation.predictor:SegmentationPredictor",
    interpretation="easytransfer.tasks.segmentation.interpretation:SegmentationInterpretation",
    heads="easytransfer.tasks.segmentation.model:segmentation_heads",
    defaults=TaskDefaults(bs=8, aug="flips", head="unet"),
    cli="easytransfer.tasks.segmentation.cli",
))
