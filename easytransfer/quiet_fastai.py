"""fastai imported once with torch's ``torch.jit.script`` deprecation warning silenced.

fastai decorates a few functions with ``torch.jit.script`` when it is imported, and torch 2.x warns about that
on every `easytransfer` command. Each easytransfer package whose modules import fastai imports this module
first: the warning is silenced only while fastai's layers load, so a user's own ``torch.jit.script`` still
warns.

>>> import sys; from easytransfer import quiet_fastai
>>> "fastai.layers" in sys.modules
True
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import fastai.layers  # noqa: F401
