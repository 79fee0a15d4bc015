"""The names a user picks from (augmentation presets, heads, annotation formats) and the per-task defaults.

Plain strings and numbers, free of torch and fastai, so that ``easytransfer --help`` and argument errors can
show and check them without loading a deep-learning stack (issue 19: every command took ~10 s, ``--help``
included). The modules that use them (`data.augment`, `data.detection`, `models.segmentation`,
`models.detection`) import them from here.

>>> "light" in AUG_PRESETS, sorted(SEGMENTATION_HEADS)[:2]
(True, ['deeplabv3plus', 'fpn'])
"""

from __future__ import annotations

__all__ = ["ANNOTATION_FORMATS", "AUG_PRESETS", "DEFAULT_DETECTION_BS", "DEFAULT_DETECTION_SIZE", "DETECTION_HEADS",
           "INSTANCE_HEADS", "SEGMENTATION_HEADS",
           "DEFAULT_MASTER_PORT", "PRECISIONS"]

AUG_PRESETS = ("none", "flips", "light", "strong")
ANNOTATION_FORMATS = ("voc", "coco", "yolo")
DEFAULT_DETECTION_SIZE = 320  # measured on the raccoon set: 320 px trains ~3x faster than 512 on 2 CPU cores
DEFAULT_DETECTION_BS = 8
DETECTION_HEADS = ("fasterrcnn", "retinanet", "fcos", "maskrcnn")
INSTANCE_HEADS = ("maskrcnn",)  # the detection heads that also predict a mask per object
# head name -> smp class name; every one takes a timm CNN encoder of 5 feature levels (``tu-`` + timm name)
SEGMENTATION_HEADS = {
    "unet": "Unet",
    "fpn": "FPN",
    "deeplabv3plus": "DeepLabV3Plus",
    "unetplusplus": "UnetPlusPlus",
    "linknet": "Linknet",
}
PRECISIONS = ("no", "fp16", "bf16")  # mixed precision on a GPU (`train.precision`)
DEFAULT_MASTER_PORT = 29500  # torchrun's own default rendezvous port (`train.distributed`)
