"""easytransfer/log.py: the library's own messages, one line each on the current standard error, and off."""

from __future__ import annotations

import logging

from easytransfer.log import get_logger, messages_off


def test_messages_go_to_the_current_stderr_once_and_messages_off_keeps_warnings(capsys):
    log = get_logger("easytransfer.tests")
    log.info("restored the best epoch")
    captured = capsys.readouterr()
    assert captured.err == "restored the best epoch\n" and captured.out == ""
    level = logging.getLogger("easytransfer").level
    with messages_off():
        log.info("hidden")
        log.warning("still shown")
    assert capsys.readouterr().err == "still shown\n"
    assert logging.getLogger("easytransfer").level == level
