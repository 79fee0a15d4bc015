"""One call that seeds everything a run draws from: Python's `random`, numpy and torch (fastai's ``set_seed``)."""

from __future__ import annotations

__all__ = ["set_seed"]


def set_seed(seed: int, reproducible: bool = False) -> None:
    """Seed Python, numpy and torch, so that a head's initial weights and the order of the batches repeat.

    ``transfer_learner(..., seed=42)`` calls it before making the head; ``ImageData.from_folder(seed=)`` fixes only
    the split. `reproducible` also makes cuDNN deterministic (slower on a GPU).

    >>> import torch
    >>> set_seed(42); a = torch.rand(2)
    >>> set_seed(42); bool(torch.equal(a, torch.rand(2)))
    True
    """
    from fastai.torch_core import set_seed as fastai_set_seed

    fastai_set_seed(seed, reproducible=reproducible)
