"""The learning-rate finder: fastai's exponential LR sweep, with the learner left exactly as it was."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from fastai.callback.schedule import LRFinder, ParamScheduler, minimum, slide, steep, valley
from matplotlib.figure import Figure

from .head_loop import HeadLoop

__all__ = ["LRFinderResult", "find_lr"]

SUGGESTION_FUNCS = {"valley": valley, "steep": steep, "minimum": minimum, "slide": slide}


class _InMemoryLRFinder(LRFinder):
    """fastai's `LRFinder` without its save to / load from ``learn.path`` (we snapshot in memory instead)."""

    def before_fit(self):
        ParamScheduler.before_fit(self)
        self.best_loss = float("inf")

    def after_fit(self):
        self.learn.opt.zero_grad()


@dataclass
class LRFinderResult:
    """The loss at each learning rate of an LR sweep, and the suggested rates.

    Attributes:
        lrs, losses: the head's learning rate and the smoothed training loss at each step.
        suggestions: ``{"valley": ..., "steep": ..., "minimum": ..., "slide": ...}`` (fastai's suggestion rules;
            a rule that cannot be applied to a short sweep is left out). ``result.valley`` etc. also work.
        stopped_early: the sweep ended because the loss diverged.

    >>> res = learn.lr_find(); res.valley; res.plot()  # doctest: +SKIP
    """

    lrs: np.ndarray
    losses: np.ndarray
    suggestions: dict[str, float] = field(default_factory=dict)
    points: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)
    stopped_early: bool = False

    def __getattr__(self, name: str):
        suggestions = self.__dict__.get("suggestions", {})
        if name in SUGGESTION_FUNCS:
            if name not in suggestions:
                raise AttributeError(f"No {name!r} suggestion: the sweep had too few points ({len(self.lrs)}).")
            return suggestions[name]
        raise AttributeError(name)

    @property
    def suggested(self) -> float:
        """The rate `fit_frozen(lr="find")` uses: valley, else steep, else a tenth of the minimum."""
        for name in ("valley", "steep"):
            if name in self.suggestions:
                return self.suggestions[name]
        if "minimum" in self.suggestions:
            return self.suggestions["minimum"]
        return float(self.lrs[int(np.nanargmin(self.losses))] / 10) if len(self.lrs) else 1e-3

    def plot(self, ax=None) -> Figure:
        """Loss against learning rate (log scale) with the suggestions marked; returns the Figure."""
        if ax is None:
            fig = Figure(figsize=(6, 4), layout="constrained")  # room for the axis labels: none is clipped
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        ax.plot(self.lrs, self.losses)
        for (name, (lr, loss)), colour in zip(self.points.items(), ("C1", "C2", "C3", "C4")):
            # the legend gives the suggestion itself: fastai's `minimum` suggests a tenth of the rate it marks
            ax.plot([lr], [loss], "o", color=colour, label=f"{name}: {self.suggestions[name]:.1e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (head)")
        ax.set_ylabel("training loss (smoothed)")
        ax.set_title("LR finder")
        if self.points:
            ax.legend()
        return fig

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.2e}" for k, v in self.suggestions.items())
        return f"LRFinderResult({len(self.lrs)} steps; {shown})"


def _suggest(lrs: np.ndarray, losses: np.ndarray, num_it: int):
    """fastai's suggestion rules on the same window fastai's `lr_find` uses (skip the first tenth and last 5)."""
    lrs_t, losses_t = torch.tensor(lrs[num_it // 10:-5]), torch.tensor(losses[num_it // 10:-5])
    finite = torch.isfinite(losses_t)
    if not finite.all():
        stop = int(torch.nonzero(~finite)[0])
        lrs_t, losses_t = lrs_t[:stop], losses_t[:stop]
    suggestions, points = {}, {}
    for name, func in SUGGESTION_FUNCS.items():
        if len(losses_t) < 3:
            break
        if name == "slide":  # fastai's slide looks 15 steps back; fewer on a short sweep
            func = partial(slide, lr_diff=min(15, len(losses_t) // 2))
        try:
            lr, point = func(lrs_t, losses_t, num_it)
        except (IndexError, ValueError, RuntimeError):  # too few points for this rule
            continue
        if lr is None or not np.isfinite(lr):
            continue
        suggestions[name] = float(lr)
        points[name] = (float(point[0]), float(point[1]))
    return suggestions, points


def find_lr(learn, start_lr=1e-7, end_lr=10.0, num_it: int = 100, stop_div: bool = True, *,
            loop: HeadLoop | None = None) -> LRFinderResult:
    """Sweep the learning rate exponentially from `start_lr` to `end_lr` and restore the learner afterwards.

    `start_lr` / `end_lr` may be arrays (one rate per layer group) to sweep discriminative rates together.
    Model weights, buffers (BatchNorm statistics) and the optimizer state are copied in memory before the
    sweep and put back after it, also when it is interrupted; nothing is written to disk.

    Args:
        loop: run the sweep in this `HeadLoop` (the head on cached features) instead of ``learn.fit``.

    Returns:
        an `LRFinderResult`.

    >>> find_lr(learn, num_it=50).valley  # doctest: +SKIP
    """
    model_state = copy.deepcopy(learn.model.state_dict())
    had_opt = learn.opt is not None
    if not had_opt:
        learn.create_opt()
    opt_state = copy.deepcopy(learn.opt.state_dict())
    finder = _InMemoryLRFinder(start_lr=start_lr, end_lr=end_lr, num_it=num_it, stop_div=stop_div)
    dls, fit = (learn.dls, learn.fit) if loop is None else (loop.dls, loop.fit)
    n_epoch = num_it // max(1, len(dls.train)) + 1
    try:
        with learn.no_logging():
            fit(n_epoch, cbs=[finder])
        lrs = np.array([float(x) for x in learn.recorder.lrs])
        losses = np.array([float(x) for x in learn.recorder.losses])
    finally:
        learn.model.load_state_dict(model_state)
        if had_opt:
            learn.opt.load_state_dict(opt_state)
        else:
            learn.opt = None
    suggestions, points = _suggest(lrs, losses, finder.num_it)
    return LRFinderResult(lrs, losses, suggestions, points, stopped_early=len(lrs) < finder.num_it)
