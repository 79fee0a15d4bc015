"""The tasks: one folder each over the task-agnostic stages (data, models, train, evaluate, deploy).

Importing this package registers the built-in tasks (their records only: no torch is loaded).

>>> from easytransfer.tasks import get_task
>>> get_task("classification").defaults.head
'linear'
"""

from . import classification as classification  # noqa: F401  (registers the task)
from . import detection as detection  # noqa: F401
from . import segmentation as segmentation  # noqa: F401
from .registry import Task as Task
from .registry import TaskDefaults as TaskDefaults
from .registry import available_heads as available_heads
from .registry import available_tasks as available_tasks
from .registry import get_task as get_task
from .registry import register_task as register_task
