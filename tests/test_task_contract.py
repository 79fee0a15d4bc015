"""The task contract: every registered task trains, evaluates, exports and predicts the same way.

Parametrized over `available_tasks()`, so a newly registered task is tested without a new test; its tiny data
comes from `tests/task_data.py` (`TASK_DATA`, keyed by the task's name). The contract, on the public API only:
``get_task(name).learner_factory(data, arch, pretrained=False)`` -> ``fit_frozen(1)`` -> ``evaluate()`` gives
finite numbers -> ``export`` writes a bundle whose ``task`` is the name and whose ``task_config`` is the task's
config type -> `load_model` gives the task's predictor class -> that predictor predicts what the learner does.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import pytest
import torch
from task_data import ARCH, TASK_DATA

from easytransfer import load_model
from easytransfer.tasks import available_tasks, get_task
from easytransfer.tasks.loading import read_model_config

TASKS = [task.name for task in available_tasks()]


@pytest.fixture(autouse=True)
def one_thread():
    """Small steps on a shared 2-core machine are several times faster with one thread than oversubscribed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def finite_numbers(scores: dict) -> dict:
    """Every number in `scores` (nested dicts flattened; nan allowed only for per-class entries of absent classes)."""
    flat = {}
    for key, value in scores.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def test_every_registered_task_has_contract_data():
    missing = [name for name in TASKS if name not in TASK_DATA]
    assert not missing, (f"No contract data for the registered task(s) {missing}: add a generator to TASK_DATA in "
                         "tests/task_data.py (tiny images and labels written under a folder, the data object built "
                         "from them, how to compare learn.predict with the exported predictor's predict).")
    assert {"classification", "segmentation", "detection"} <= set(TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_task_contract(name, tmp_path):
    if name not in TASK_DATA:
        pytest.fail(f"The task {name!r} is registered but tests/task_data.py has no TASK_DATA[{name!r}]: add a "
                    "generator of its tiny data there so the task contract can run on it.")
    task, recipe = get_task(name), TASK_DATA[name]
    made = recipe.make(tmp_path / "data")
    assert isinstance(made.data, task.data_class)

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        learn = task.learner_factory(made.data, ARCH, pretrained=False, checkpoint_dir=tmp_path / "checkpoints",
                                     **recipe.learner_kwargs)
        assert learn.task == name
        assert learn.fit_frozen(1) is learn

        scores = learn.evaluate()
    numbers = finite_numbers(scores)
    assert numbers and all(isinstance(v, (int, float)) for v in numbers.values()), scores
    # a per-class score of a class absent from the few test images is nan by definition; every total is finite
    totals = {k: v for k, v in numbers.items() if "." not in k}
    assert totals and all(math.isfinite(v) for v in totals.values()), scores

    bundle = learn.export(tmp_path / "bundle")
    config = read_model_config(bundle)
    assert config.task == name == learn.bundle_config().task
    assert isinstance(config.task_config, task.config_type)
    assert config.task_config == learn.bundle_config().task_config

    predictor = load_model(bundle, device="cpu")
    assert isinstance(predictor, task.predictor_class)
    assert made.images
    for image in made.images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recipe.same_prediction(learn.predict(image, **recipe.predict_kwargs),
                                   predictor.predict(image, **recipe.predict_kwargs))
