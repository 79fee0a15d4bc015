"""``python -m easytransfer.cli``: the same as the ``easytransfer`` command."""

import sys

from .main import main

sys.exit(main())
