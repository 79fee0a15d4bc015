"""Data: image files gathered from folders and tables, checked, split, and served as fastai DataLoaders."""

from .. import quiet_fastai  # noqa: F401  (first: fastai without torch's jit warning)
from .loaders import DataRecipe as DataRecipe
from .loaders import ImageData as ImageData
from .options import LoaderOptions as LoaderOptions
from .report import DataReport as DataReport
from .split import split_train_valid_test as split_train_valid_test
from .split import stratified_split as stratified_split
