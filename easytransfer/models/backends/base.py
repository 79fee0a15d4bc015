"""`ModelBackend`: one source of architectures (timm, torchvision ...), and the registry that dispatches names.

A backend owns everything that differs between sources: which names it accepts, the `ModelSpec` of an
architecture, building it (optionally for another input size), loading its pre-trained weights, replacing its
head, its layer-group matcher, and its multi-scale feature body for dense tasks (`create_features`).
`create_model`, `create_features` and the learners only talk to backends through this interface, so a new
source is one new module with a `ModelBackend` subclass plus one `register_backend` call in
``backends/__init__.py``.
"""

from __future__ import annotations

import difflib
import os
from abc import ABC, abstractmethod
from dataclasses import replace

import torch
from torch import nn

from ...errors import UnknownModelError, WeightsUnavailableError
from ..feature_body import FeatureBody, NoMultiScaleFeaturesError
from ..heads import HeadConfig
from ..matchers import matcher_stages
from ..spec import ModelSpec
from ..weights import body_source_names, load_body_weights

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
    # whether `feature_module` cuts the body out of the full model itself (torchvision), which must then be built
    # for real; otherwise (timm) the body is built on its own and the full model, without weights to load, only on
    # the meta device (its state-dict keys and group matcher are all that is read)
    body_from_full: bool = False
    # whether its models have multi-scale feature maps (`feature_module`); a source without (CLIP towers: one
    # pooled embedding) is refused at once, before anything is built or downloaded
    has_features: bool = False

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

    # ------------------------------------------------------------------------------------- dense tasks
    def feature_module(self, full: nn.Module, arch: str, *, out_indices: tuple[int, ...] | None = None,
                       output_stride: int | None = None) -> tuple[nn.Module, tuple[int, ...], tuple[int, ...], bool]:
        """The multi-scale body of `arch`: ``(module, channels, reductions, channels_last)``; `full` is the
        classifier it comes from. Sources without one (CLIP towers) keep this default, which refuses, and
        ``has_features = False``.

        Raises:
            NoMultiScaleFeaturesError: always, here.
        """
        raise NoMultiScaleFeaturesError(arch, f"{self.source} models are not built as feature pyramids here")

    def create_features(self, arch: str, *, pretrained: bool = False, weights: str | os.PathLike | None = None,
                        out_indices: tuple[int, ...] | None = None, output_stride: int | None = None,
                        name: str | None = None) -> FeatureBody:
        """`arch` as a multi-scale feature body (`FeatureBody`), with the full classifier's weights loaded strictly.

        The full model is built and its weights loaded as for classification (`load_pretrained`: a local file,
        packaged offline weights, the hub); `load_body_weights` then fills every body tensor from them, nothing
        missing. The body's stages come from the full model's group matcher, its names mapped to the body's.

        Args:
            arch: the source's own name (`backend_for` gives it).
            pretrained: load pre-trained weights; weights: a local file of the full classifier instead.
            out_indices: which feature levels to return (timm's ``out_indices``; default all).
            output_stride: 16 or 8 for a dilated body (DeepLabV3+); default 32.
            name: the name the user typed, for messages (default `arch`).

        Raises:
            NoMultiScaleFeaturesError: the architecture has no multi-scale maps (a ViT, a CLIP tower).
            WeightsUnavailableError, WeightsMismatchError: as for classification.
        """
        name = name or arch
        if not self.has_features:
            raise NoMultiScaleFeaturesError(name, f"{self.source} models give one pooled embedding per image, "
                                            "not feature maps at several strides")
        load = pretrained or weights is not None
        full = self._full_for_features(arch, load=load)
        where = "random init"
        if load:
            try:
                where = self.load_pretrained(full, arch, weights=weights)
            except WeightsUnavailableError as e:  # name what the user typed, not the source's name for it
                if e.arch == name:
                    raise
                raise WeightsUnavailableError(name, e.tried, e.fix) from None
        module, channels, reductions, channels_last = self.feature_module(
            full, arch, out_indices=out_indices, output_stride=output_stride)
        if load:
            names = load_body_weights(module, full.state_dict(), where=where, arch=name)
        else:  # the same pairing, so that a body the weights could not fill fails now, not when they are asked for
            names = body_source_names(list(module.state_dict()), list(full.state_dict()), arch=name)
        return FeatureBody(module=module, channels=tuple(int(c) for c in channels),
                           reductions=tuple(int(r) for r in reductions), stages=self._body_stages(module, full, names),
                           weights=where, source=self.source, arch=arch, channels_last=bool(channels_last))

    def _full_for_features(self, arch: str, *, load: bool) -> nn.Module:
        if not load and not self.body_from_full:
            try:  # only its keys and group matcher are read
                with torch.device("meta"):
                    return self.create(arch, head=HeadConfig())
            except Exception:  # noqa: BLE001 - a model whose constructor computes on tensors; build it for real
                pass
        return self.create(arch, head=HeadConfig(), pretrained=load)

    def _body_stages(self, module: nn.Module, full: nn.Module, names: dict[str, str]) -> tuple[tuple[str, ...], ...]:
        """The body's parameter names per natural stage of the full model (its group matcher), stem first."""
        params = [n for n, _ in module.named_parameters()]
        body_of = {names[n]: n for n in params}
        matcher = self.matcher_for(full)
        if matcher is None:  # no matcher: the body's top-level modules, in order
            order: dict[str, list[str]] = {}
            for n in params:
                order.setdefault(n.split(".", 1)[0], []).append(n)
            return tuple(tuple(s) for s in order.values())
        stages = [[body_of[n] for n in stage if n in body_of] for stage in matcher_stages(full, matcher)]
        stages = [s for s in stages if s]
        left = [n for n in params if n not in {m for s in stages for m in s}]
        if left:  # body parameters no stage holds (none known): with the last stage, as timm does unmatched ones
            stages[-1].extend(left)
        return tuple(tuple(s) for s in stages)


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
