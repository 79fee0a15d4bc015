"""Every registered task's command-line module (tasks/<task>/cli.py, found through the registry) and what they
share (tasks/command_line.py): the same functions, flags that parse, flags that belong to that task only."""

from __future__ import annotations

import argparse

import pytest

from easytransfer.errors import DataError, EasyTransferError
from easytransfer.tasks import available_tasks
from easytransfer.tasks.classification import cli as classification_cli
from easytransfer.tasks.command_line import image_folder, name_list, print_scores, require_predictions, write_scores
from easytransfer.tasks.detection import cli as detection_cli
from easytransfer.tasks.segmentation import cli as segmentation_cli

TASK_CLI_FUNCTIONS = ("add_train_arguments", "add_evaluate_arguments", "add_predict_arguments", "check_train_args",
                      "build_learner", "finish_training", "evaluate", "predict")


CLI_MODULES = {"classification": classification_cli, "segmentation": segmentation_cli, "detection": detection_cli}


def test_the_registry_names_these_modules():
    assert {t.name: t.cli for t in available_tasks()} == {name: m.__name__ for name, m in CLI_MODULES.items()}


@pytest.mark.parametrize("task", list(CLI_MODULES))
def test_each_task_cli_module_has_the_same_functions_and_its_own_flags(task):
    module = CLI_MODULES[task]
    assert all(callable(getattr(module, name, None)) for name in TASK_CLI_FUNCTIONS)
    assert isinstance(module.DISTRIBUTED, bool)
    train, model = argparse.ArgumentParser(), argparse.ArgumentParser()
    module.add_train_arguments(train, "train")
    evaluate, predict = model.add_argument_group("evaluate"), argparse.ArgumentParser()
    module.add_evaluate_arguments(evaluate)
    module.add_predict_arguments(predict)
    model_flags = set(vars(model.parse_args([]))) | set(vars(predict.parse_args([])))
    assert set(module.TRAIN_FLAGS) <= set(vars(train.parse_args([]))) and set(module.MODEL_FLAGS) <= model_flags


def test_name_lists_and_image_folders():
    assert name_list("bg, crack") == ["bg", "crack"]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated"):
        name_list("bg,,crack")
    with pytest.raises(EasyTransferError, match="--images DIR"):
        image_folder(argparse.Namespace(images=None, data=None, task="segmentation"), "--masks DIR")
    with pytest.raises(EasyTransferError, match="Give the images once"):
        image_folder(argparse.Namespace(images="a", data="b", task="detection"), "--annotations")


def test_scores_are_printed_and_written(tmp_path, capsys):
    print_scores({"n_images": 2, "map50": 0.25, "per_class_ap": {"cat": 0.5, "dog": 0.0}})
    out = capsys.readouterr().out
    assert "map50: 0.2500" in out and "cat" in out
    write_scores({"n_images": 2, "map50": 0.25}, tmp_path / "scores.json")
    assert '"map50": 0.25' in (tmp_path / "scores.json").read_text()
    with pytest.raises(DataError):
        require_predictions(3, 0, ["a.jpg", "b.jpg", "c.jpg"])
