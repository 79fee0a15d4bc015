"""easytransfer/version.py: the one place the version lives; the package, setup.cfg and the bundles read it."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import easytransfer
from easytransfer.version import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_pep_440_and_read_from_this_module_only():
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", __version__)
    assert easytransfer.__version__ == __version__
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: easytransfer.version.__version__"
