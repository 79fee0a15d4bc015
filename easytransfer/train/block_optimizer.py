"""A fit with one optimizer parameter group per block (layer decay): the learner's groups swapped and back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastai.learner import Learner
from fastai.optimizer import OptimWrapper

from ..models.layer_groups import LayerGroups

__all__ = ["optimizer_over"]


@contextmanager
def optimizer_over(learn: Learner, groups: LayerGroups) -> Iterator[None]:
    """Within the block `groups` are `learn`'s layer groups and its optimizer has one parameter group per group.

    ``requires_grad`` (what is frozen) is not touched. The optimizer's per-parameter state (Adam's moments) is
    carried into the new optimizer and back; afterwards the learner's own layer groups and optimizer (or a new
    one over them) are back, also when the fit is interrupted, and each of its groups has the highest rate the
    block optimizer last gave one of its parameters.

    Args:
        learn: a learner with ``layer_groups`` (a `TransferLearner`), using fastai's own optimizer.
        groups: the groups to train with, e.g. `block_layer_groups` (one per transformer block).

    Returns:
        A context manager.

    Raises:
        ValueError: `learn` uses an `OptimWrapper` (a torch optimizer), whose groups cannot be rebuilt.

    >>> with optimizer_over(learn, block_layer_groups(learn.model)):  # doctest: +SKIP
    ...     learn.fit(1)
    """
    wrapped = (isinstance(learn.opt, OptimWrapper) or isinstance(learn.opt_func, OptimWrapper)
               or getattr(learn.opt_func, "func", None) is OptimWrapper)  # partial(OptimWrapper, opt=...)
    if wrapped:
        raise ValueError("Per-block rates need fastai's own optimizer (opt_func such as Adam), not an "
                         "OptimWrapper; use decay= instead.")
    own_groups, own_opt = learn.layer_groups, learn.opt
    learn.layer_groups, learn.splitter = groups, groups.splitter
    try:
        learn.create_opt()
        if own_opt is not None:
            _carry_optimizer_state(own_opt, learn.opt)
        yield
    finally:
        block_opt = learn.opt
        learn.layer_groups, learn.splitter = own_groups, own_groups.splitter
        if own_opt is None:
            learn.create_opt()
        else:
            learn.opt = own_opt
        if block_opt is not None and block_opt is not own_opt:
            _carry_optimizer_state(block_opt, learn.opt)
            _carry_top_rates(block_opt, learn.opt)


def _carry_optimizer_state(source, target) -> None:
    """Copy fastai optimizer state per parameter (moments, step counts) from `source` to `target`, same params."""
    for p, *_ in source.all_params():
        state = source.state.get(p)  # a plain dict after load_state_dict: .get, not the defaultdict's []
        if state:
            target.state[p] = {**target.state.get(p, {}), **state}


def _carry_top_rates(source, target) -> None:
    """Give each of `target`'s parameter groups the highest rate `source` last had for one of its parameters.

    After a per-block fit the layer groups' rates (`summary_groups`) are then those the fit ended with.
    """
    rate_of = {id(p): h["lr"] for group, h in zip(source.param_lists, source.hypers) for p in group}
    rates = [max((rate_of[id(p)] for p in group if id(p) in rate_of), default=h["lr"])
             for group, h in zip(target.param_lists, target.hypers)]
    target.set_hyper("lr", rates)
