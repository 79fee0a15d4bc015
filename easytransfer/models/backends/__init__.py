"""Model sources as backends: one module per source, registered here (a new source: a module and one line).

>>> [backend.source for backend in registered_backends()]
['torchvision', 'open_clip', 'timm']
"""

from .base import ModelBackend as ModelBackend
from .base import backend_for as backend_for
from .base import get_backend as get_backend
from .base import register_backend as register_backend
from .base import registered_backends as registered_backends
from .open_clip import OpenClipBackend
from .timm import TimmBackend
from .torchvision import TorchvisionBackend

register_backend(TorchvisionBackend())
register_backend(OpenClipBackend())
register_backend(TimmBackend())
