"""The task registry: one `Task` record per thing a model can predict, and the lookups every shared part uses.

A task (classification, segmentation, detection ...) is one folder under ``easytransfer/tasks/`` whose
``__init__.py`` calls `register_task` with a `Task`. The record names the task's parts by import path
(``"module:attribute"``), so registering a task, listing tasks and the command line's ``--help`` load no torch;
each part is imported the first time it is asked for. `load_model`, the command line and `available_heads`
look a task up here by its name, the one vocabulary (the bundle's ``task``, ``--task``, ``learn.task``); no
module outside ``tasks/`` imports a task's modules.

>>> [task.name for task in available_tasks()]
['classification', 'detection', 'segmentation']
>>> get_task("segmentation").default_head
'unet'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["HeadSupport", "Task", "TaskDefaults", "available_heads", "available_tasks", "get_task", "register_task"]


@dataclass(frozen=True)
class HeadSupport:
    """One head of one task and the backbones it works with.

    Attributes:
        task: the task's name (``"classification"``, ``"segmentation"``, ``"detection"`` ...).
        head: the name the task's learner takes (``head="unet"``).
        backbones: the backbones it takes, in words.
        offline: backbone names whose ImageNet weights ship with easytransfer's dependencies and that the tests or
            benchmarks have run with this head (they work without a network).
        note: what the head is and when to choose it.
    """

    task: str
    head: str
    backbones: str
    offline: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class TaskDefaults:
    """The library's own defaults of a task where a user gives none (the command line uses them too).

    Attributes:
        bs: batch size; aug: augmentation preset; head: the head the learner builds.
    """

    bs: int
    aug: str
    head: str


@dataclass(frozen=True)
class Task:
    """What a task is made of, each part named by its import path ``"package.module:attribute"``.

    Attributes:
        name: the one name of the task (bundle, command line, ``learn.task``).
        summary: what the model predicts, in a few words.
        data: the data class (``ImageData``, ``SegmentationData`` ...).
        learner: the learner factory (``transfer_learner`` ...); its first argument is the data.
        config: the typed config the bundle records as ``task_config`` (``to_dict`` / ``from_dict``).
        predictor: the `Predictor` subclass `load_model` returns (its ``from_bundle(path, config, ...)``).
        interpretation: the interpretation class of ``learn.interpret()``.
        heads: a function returning the task's `HeadSupport` records.
        defaults: the `TaskDefaults`.
        cli: the module that adds the task's flags to ``easytransfer train`` and builds its data and learner.
    """

    name: str
    summary: str
    data: str
    learner: str
    config: str
    predictor: str
    interpretation: str
    heads: str
    defaults: TaskDefaults
    cli: str

    def part(self, name: str):
        """The object a part names, imported on first use (Python keeps the module): ``.part("learner")``."""
        module, _, attribute = getattr(self, name).partition(":")
        return getattr(importlib.import_module(module), attribute)

    @property
    def default_head(self) -> str:
        return self.defaults.head

    @property
    def data_class(self) -> type:
        return self.part("data")

    @property
    def learner_factory(self):
        return self.part("learner")

    @property
    def config_type(self) -> type:
        return self.part("config")

    @property
    def predictor_class(self) -> type:
        return self.part("predictor")

    @property
    def interpretation_class(self) -> type:
        return self.part("interpretation")

    def head_supports(self) -> tuple[HeadSupport, ...]:
        return tuple(self.part("heads")())

    def config_from_dict(self, data: dict):
        """The task's typed config from the bundle's ``task_config`` object."""
        return self.config_type.from_dict(data)


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task` known to `load_model`, the command line and `available_heads`; returns it.

    Registering the same record twice is harmless; another record under a taken name is an error.
    """
    if not isinstance(task, Task) or not task.name:
        raise ValueError(f"register_task takes a Task with a name, got {task!r}.")
    known = _TASKS.get(task.name)
    if known is not None and known != task:
        raise ValueError(f"A task named {task.name!r} is registered already; choose another name.")
    _TASKS.setdefault(task.name, task)
    return _TASKS[task.name]


def available_tasks() -> tuple[Task, ...]:
    """The registered tasks, in the order they were registered."""
    return tuple(_TASKS.values())


def get_task(name: str) -> Task:
    """The task registered under `name`.

    >>> get_task("detection").summary
    'boxes around objects, each with a class and a score'
    >>> get_task("depth")
    Traceback (most recent call last):
    ...
    ValueError: Unknown task 'depth'; the tasks are ['classification', 'detection', 'segmentation'].
    """
    try:
        return _TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown task {name!r}; the tasks are {list(_TASKS)}.") from None


def available_heads(task: str | None = None) -> list[HeadSupport]:
    """Every head of `task` (default: all tasks) and the backbones it works with.

    Args:
        task: a registered task's name, or ``None`` for all.

    Returns:
        A list of `HeadSupport` records (print one for its fields).

    >>> from easytransfer import available_heads
    >>> sorted({h.task for h in available_heads()})
    ['classification', 'detection', 'segmentation']
    >>> [h.head for h in available_heads("detection")]
    ['fasterrcnn', 'retinanet', 'fcos', 'maskrcnn']
    """
    if task is not None and task not in _TASKS:
        raise ValueError(f"task must be one of {tuple(_TASKS)} or None, got {task!r}")
    tasks = available_tasks() if task is None else (get_task(task),)
    return [head for t in tasks for head in t.head_supports()]
