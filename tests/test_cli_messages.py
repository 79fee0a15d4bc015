"""Tests of easytransfer/cli/messages.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import re

import pytest

from easytransfer.cli import main


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_errors_speak_cli(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    err = _error(capsys, ["describe", "efficientnet_lite7"])
    names = re.search(r"Closest known names: ([^.]*)\.", err).group(1).split(", ")
    assert len(names) == len(set(names)) and "efficientnet_lite0" in names
    assert "easytransfer models" in err and "list_models" not in err
    err = _error(capsys, ["evaluate", "run", "test"])
    assert "'run/model'" in err
    (run / "labels.csv").write_text("file,tag\n" + "".join(f"{p},cat\n" for p in (run / "test" / "cat").iterdir()))
    err = _error(capsys, ["train", "labels.csv", "--out", "never"])
    assert "--fn-col" in err and "fn_col=" not in err


def test_weights_error_names_what_was_typed_in_cli_words(monkeypatch):
    from easytransfer.cli.messages import cli_message
    from easytransfer.errors import WeightsUnavailableError
    from easytransfer.models.backends.timm import TimmBackend
    from easytransfer.models.factory import build_model

    def unavailable(self, model, arch, *, weights=None, head=None):
        raise WeightsUnavailableError(arch, [("Hugging Face hub", "offline")])

    monkeypatch.setattr(TimmBackend, "load_pretrained", unavailable)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("efficientnet_lite3", 2)
    assert info.value.arch == "efficientnet_lite3"  # what was typed, not timm's tf_efficientnet_lite3
    text = cli_message(info.value)
    assert "--weights FILE" in text and "--random-init" in text and "pretrained=False" not in text
