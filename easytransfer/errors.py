"""Exceptions raised by easytransfer.

Every message names the input that was wrong and says what to do about it, so that a user never has to
read a traceback from deep inside torch to find out what happened.
"""

from __future__ import annotations

from collections.abc import Sequence


class EasyTransferError(Exception):
    """Base class for every error easytransfer raises on purpose."""


class UnknownModelError(EasyTransferError, ValueError):
    """An architecture name that no source (timm, torchvision, aliases) knows."""

    def __init__(self, name: str, close_matches: Sequence[str] = ()):
        self.name = name
        self.close_matches = list(dict.fromkeys(close_matches))  # each name once, best first
        hint = f" Closest known names: {', '.join(self.close_matches)}." if self.close_matches else ""
        super().__init__(
            f"Unknown architecture {name!r}.{hint} "
            "Use easytransfer.list_models('*pattern*') to see what is available."
        )


class WeightsUnavailableError(EasyTransferError, RuntimeError):
    """No source could provide pre-trained weights for a model."""

    def __init__(self, arch: str, tried: Sequence[tuple[str, str]], fix: str | None = None):
        self.arch = arch
        self.tried = list(tried)
        self.fix = fix
        lines = "\n".join(f"  - {source}: {reason}" for source, reason in self.tried)
        if fix is None:  # a source with another way out (open_clip's local folders) says so in `fix`
            fix = (f"pass a local file, e.g. transfer_learner(dls, {arch!r}, weights='path/to/weights.safetensors') "
                   "(.safetensors, .pth or .pt)")
        super().__init__(
            f"No pre-trained weights could be loaded for {arch!r}. Sources tried:\n{lines}\n"
            f"To fix it: connect to the internet once (weights are cached afterwards), or {fix}, "
            f"or use pretrained=False to start from random weights."
        )


class WeightsMismatchError(EasyTransferError, ValueError):
    """A weights file whose tensors do not fit the model they are loaded into."""


class DataError(EasyTransferError, ValueError):
    """Input data that cannot be turned into DataLoaders (no images, one class, bad columns ...)."""


class MissingColumnError(DataError):
    """A table without the file, label or validation column it was told to read."""

    def __init__(self, column: str, source: str, columns: Sequence[str]):
        self.column, self.source, self.columns = column, source, list(columns)
        super().__init__(f"Column {column!r} is not in {source}; its columns are {self.columns}. "
                         "Pass fn_col=, label_col= (and valid_col=) with the right names.")


class DataWarning(UserWarning):
    """Something in the input data was skipped, converted or looks risky (see ``dls.report``)."""


class NoBlockGroupsError(EasyTransferError, ValueError):
    """A model without per-block parameter groups, asked for layer decay."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        super().__init__(
            f"layer_decay needs one group per block, from timm's group_matcher(coarse=False), and {model_name} has "
            "none. Use decay= instead (one rate per layer group: learn.fit_discriminative(epochs, lr_max=1e-3, "
            "decay=0.1)), or a timm model of this family."
        )
