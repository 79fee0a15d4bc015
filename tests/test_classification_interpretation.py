"""Tests of easytransfer/tasks/classification/interpretation.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

from conftest import make_image_folder
from helpers import learner_with_data


def test_report_returns_a_displayable_object_and_prints_nothing(tmp_path, capsys):
    from easytransfer.tasks.classification.interpretation import ClassReport

    learn = learner_with_data(make_image_folder(tmp_path / "images", per_class=4))
    interp = learn.interpret()
    capsys.readouterr()  # fastai's inference bar
    report = interp.report()
    assert capsys.readouterr().out == ""
    assert isinstance(report, ClassReport) and "precision" in str(report) and "<table" in report._repr_html_()
    assert repr(report) == str(report)


def test_top_losses_say_the_model_saw_a_centre_crop(tmp_path):
    learn = learner_with_data(make_image_folder(tmp_path / "images", per_class=4, size=48))
    fig = learn.interpret().plot_top_losses(2, ncols=2)
    assert "centre" in fig._suptitle.get_text()
