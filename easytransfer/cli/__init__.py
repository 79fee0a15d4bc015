"""The ``easytransfer`` command line."""

from .main import COMMANDS as COMMANDS
from .main import build_parser as build_parser
from .main import main as main
