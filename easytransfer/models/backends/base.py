"""`ModelBackend`: one source of architectures (timm, torchvision ...), and the registry that dispatches names.

A backend owns everything that differs between sources: which names it accepts, the `ModelSpec` of an
architecture, building it (optionally for another input size), loading its pre-trained weights, replacing its
head, and its layer-group matcher. `create_model` and `transfer_learner` only talk to backends through this
interface, so a new source is one new module with a `ModelBackend` subclass plus one `register_backend` call
in ``backends/__init__.py``.
"""

from __future__ import annotations

import difflib
import os
from abc import ABC, abstractmethod
from dataclasses import replace

from torch import nn

from ...errors import UnknownModelError, WeightsUnavailableError
from ..heads import HeadConfig
from ..spec import ModelSpec

__all__ = ["ModelBackend", "backend_for", "get_backend", "register_backend", "registered_backends"]


class ModelBackend(ABC):
    """One source of architectures; subclasses fill in the abstract methods and set `source` (and `prefix`).

    Attributes:
        source: the backend's name, stored in `ModelSpec.source` and bundles (``"timm"``).
        prefix: what a user types before the source's own name (``"tv:"``); ``""`` for none.
        text_heads: whether its models can start a head from text embeddings of the class names
            (``head="zero_shot"``: CLIP models).
    """

    source: str = ""
    prefix: str = ""
    text_heads: bool = False

    # ------------------------------------------------------------------------------------------ names
    @abstractmethod
    def resolve(self, name: str) -> str | None:
        """The source's own name for `name`, ``None`` when this backend does not take the name.

        Raises `UnknownModelError` for a name carrying this backend's prefix that it does not know.
        """

    @abstractmethod
    def list_names(self) -> tuple[str, ...]:
        """Every name a user can type for this backend (with its prefix)."""

    def weights_on_disk(self, arch: str) -> bool:
        """Whether pre-trained weights for `arch` are on this machine already."""
        return False

    # ---------------------------------------------------------------------------------------- building
    @abstractmethod
    def create(self, arch: str, *, head: HeadConfig, size: int | None = None, pretrained: bool = False) -> nn.Module:
        """`arch` with random weights and its original head, built for `size` when the model takes one."""

    @abstractmethod
    def spec(self, name: str, arch: str, model: nn.Module, *, size: int | None = None) -> ModelSpec:
        """The `ModelSpec` of a freshly created `model` (its original head still in place)."""

    @abstractmethod
    def load_pretrained(self, model: nn.Module, arch: str, *, weights: str | os.PathLike | None = None,
                        head: str | None = None) -> str:
        """Load pre-trained weights into `model` (through ``models/weights.py``); returns where they came from."""

    @abstractmethod
    def replace_head(self, model: nn.Module, spec: ModelSpec, n_out: int, head: HeadConfig) -> None:
        """Give `model` a new head with `n_out` outputs, at `spec.classifier`."""

    def finish(self, model: nn.Module) -> nn.Module:
        """Last touches after the weights are in and the head is new (drop auxiliary heads ...)."""
        return model

    def build(self, name: str, arch: str, n_out: int, *, pretrained: bool, weights: str | os.PathLike | None,
              head: HeadConfig, size: int | None = None,
              arch_config: dict | None = None) -> tuple[nn.Module, ModelSpec]:
        """Create `arch`, load its weights when asked, give it a new head; returns the model and its spec.

        `arch_config` is a recorded `ModelSpec.arch_config` (from a bundle); sources whose names rebuild their
        models on their own (timm, torchvision) have none and ignore it.
        """
        load = pretrained or weights is not None
        model = self.create(arch, head=head, size=size, pretrained=load)
        spec = self.spec(name, arch, model, size=size)
        if load:
            try:
                loaded = self.load_pretrained(model, arch, weights=weights, head=spec.classifier)
            except WeightsUnavailableError as e:  # name what the user typed, not the source's name for it
                if e.arch == name:
                    raise
                raise WeightsUnavailableError(name, e.tried, e.fix) from None
            spec = replace(spec, weights=loaded)
        self.replace_head(model, spec, n_out, head)
        return self.finish(model), spec

    # ---------------------------------------------------------------------------------------- training
    @abstractmethod
    def matcher_for(self, model: nn.Module) -> dict | None:
        """The group matcher (timm's form) of a model of this source; ``None`` when it has none."""

    def fine_matcher_for(self, model: nn.Module) -> dict | None:
        """The per-block group matcher (timm's ``group_matcher(coarse=False)``) for layer decay; ``None``: none."""
        return None

    def head_dropout(self, model: nn.Module) -> float:
        """Dropout the model applies before its head in ``forward`` (outside the head module); default 0."""
        return 0.0


_BACKENDS: dict[str, ModelBackend] = {}


def register_backend(backend: ModelBackend) -> ModelBackend:
    """Make `backend` available to `create_model`, `list_models` and `transfer_learner`; returns it.

    >>> get_backend("torchvision").prefix
    'tv:'
    """
    if not isinstance(backend, ModelBackend) or not backend.source:
        raise ValueError(f"register_backend takes a ModelBackend with a source name, got {backend!r}.")
    if backend.source in _BACKENDS and type(_BACKENDS[backend.source]) is not type(backend):
        raise ValueError(f"A backend for source {backend.source!r} is registered already "
                         f"({type(_BACKENDS[backend.source]).__name__}); choose another source name.")
    _BACKENDS[backend.source] = backend
    return backend


def registered_backends() -> tuple[ModelBackend, ...]:
    """The registered backends, those with a prefix first (they claim their names before the others).

    >>> [b.source for b in registered_backends()]
    ['torchvision', 'open_clip', 'timm']
    """
    return tuple(sorted(_BACKENDS.values(), key=lambda b: not b.prefix))


def get_backend(source: str) -> ModelBackend:
    """The backend registered for `source` (``"timm"``, ``"torchvision"``).

    >>> get_backend("timm").source
    'timm'
    """
    try:
        return _BACKENDS[source]
    except KeyError:
        raise ValueError(f"No model backend for source {source!r}; registered: {sorted(_BACKENDS)}.") from None


def backend_for(name: str) -> tuple[ModelBackend, str]:
    """The backend that takes architecture `name`, and the name inside that source.

    >>> backend, arch = backend_for("tv:resnet18")
    >>> backend.source, arch
    ('torchvision', 'resnet18')

    Raises:
        UnknownModelError: listing the closest known names of every backend.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(repr(name))
    name = name.strip()
    for backend in registered_backends():
        arch = backend.resolve(name)
        if arch is not None:
            return backend, arch
    known = list(dict.fromkeys(n for backend in registered_backends() for n in backend.list_names()))  # once each
    raise UnknownModelError(name, difflib.get_close_matches(name, known, n=5, cutoff=0.5))
