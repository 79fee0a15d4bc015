"""The training history: one typed record per epoch of every fit (`History`), its table and its plot.

``learn.fit_history`` is the `History`; ``learn.history`` is the same as a pandas DataFrame (``to_frame``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["FASTAI_FIT_LABELS", "PROBE_LABELS", "EpochRecord", "FineTuneChoice", "History", "Phase", "PhaseKind",
           "as_history", "metric_columns", "plot_history", "train_batches_name"]


class PhaseKind(str, Enum):
    """What a fit trained: the head alone (frozen body, or a probe) or some of the body too."""

    FROZEN = "frozen"  # `fit_frozen`: the head by gradient descent, body frozen
    PROBE = "probe"  # `fit_frozen(method="logistic" | "prototype" | "knn")`: the head fitted in one go
    DISCRIMINATIVE = "discriminative"  # `fit_discriminative`: unfrozen groups with their own rates
    GRADUAL = "gradual"  # `fit_gradual`: stage 0 is the head alone, stage k has k body groups open
    FIT = "fit"  # a fastai fit called directly (`fit`, `fit_one_cycle`, `fit_flat_cos`, `fit_sgdr`)


_DEFAULT_NAMES = {PhaseKind.FROZEN: "frozen", PhaseKind.PROBE: "logistic", PhaseKind.DISCRIMINATIVE: "discriminative",
                  PhaseKind.FIT: "fit"}
PROBE_LABELS = ("prototype", "knn")  # the other probes' phase labels (`Phase(PhaseKind.PROBE, label="knn")`)
FASTAI_FIT_LABELS = ("fit_one_cycle", "fit_flat_cos", "fit_sgdr")  # `PhaseKind.FIT` labels: fastai's schedules
_LAYER_DECAY_NAME = "layer decay"


@dataclass(frozen=True)
class Phase:
    """The phase of a fit: its kind, the stage of a gradual fit, and an optional label shown instead of the name.

    `layer_decay` is set when the fit gave every block its own rate (``fit_discriminative(layer_decay=...)``);
    such a fit is named ``"layer decay 0.75"`` unless it has a label. `body_trained` goes with `PhaseKind.FIT`
    (a fastai fit such as ``learn.fit_one_cycle(1)``, labelled by its schedule): whether body layer groups were
    trainable during it.

    >>> Phase(PhaseKind.GRADUAL, 2).name, Phase(PhaseKind.PROBE).trains_body
    ('stage 2', False)
    >>> Phase(PhaseKind.DISCRIMINATIVE, layer_decay=0.75).name
    'layer decay 0.75'
    >>> one_cycle = Phase(PhaseKind.FIT, label="fit_one_cycle", body_trained=True)
    >>> one_cycle.name, one_cycle.trains_body
    ('fit_one_cycle', True)
    """

    kind: PhaseKind
    stage: int | None = None
    label: str | None = None
    layer_decay: float | None = None
    body_trained: bool = False

    def __post_init__(self):
        object.__setattr__(self, "kind", PhaseKind(self.kind))
        if (self.kind is PhaseKind.GRADUAL) != (self.stage is not None):
            raise ValueError(f"a stage goes with PhaseKind.GRADUAL and only with it; got {self.kind}, "
                             f"stage {self.stage} (e.g. Phase(PhaseKind.GRADUAL, 2) or Phase(PhaseKind.FROZEN))")
        if self.layer_decay is not None:
            if self.kind not in (PhaseKind.DISCRIMINATIVE, PhaseKind.GRADUAL):
                raise ValueError(f"layer_decay goes with a fit that trains the body, not {self.kind}")
            object.__setattr__(self, "layer_decay", float(self.layer_decay))
        if self.body_trained and self.kind is not PhaseKind.FIT:
            raise ValueError(f"body_trained goes with PhaseKind.FIT (a fastai fit), not {self.kind}; the other "
                             "kinds say by themselves whether the body trained")

    @property
    def name(self) -> str:
        """The name in ``learn.history["phase"]``: ``"frozen"``, ``"logistic"``, ``"discriminative"``, ``"stage k"``,
        ``"layer decay 0.75"``."""
        if self.label is not None:
            return self.label
        if self.kind is PhaseKind.GRADUAL:
            return f"stage {self.stage}"
        if self.layer_decay is not None:
            return f"{_LAYER_DECAY_NAME} {self.layer_decay:g}"
        return _DEFAULT_NAMES[self.kind]

    @property
    def trains_body(self) -> bool:
        """Whether body layer groups were trainable in this phase (fine-tuning) rather than the head alone."""
        return (self.kind is PhaseKind.DISCRIMINATIVE or (self.kind is PhaseKind.GRADUAL and self.stage > 0)
                or (self.kind is PhaseKind.FIT and self.body_trained))

    def to_json(self) -> dict:
        data = {"kind": self.kind.value, "stage": self.stage, "label": self.label, "layer_decay": self.layer_decay}
        if self.body_trained:  # absent otherwise: checkpoints written before it read the same
            data["body_trained"] = True
        return data

    @classmethod
    def from_json(cls, data: dict) -> Phase:
        return cls(PhaseKind(data["kind"]), data.get("stage"), data.get("label"), data.get("layer_decay"),
                   bool(data.get("body_trained", False)))

    @classmethod
    def from_name(cls, name: str) -> Phase:
        """The phase a name in an old history table stands for (a table carries names only, not kinds).

        >>> Phase.from_name("stage 0") == Phase(PhaseKind.GRADUAL, 0), Phase.from_name("logistic").kind
        (True, <PhaseKind.PROBE: 'probe'>)
        >>> Phase.from_name("knn")
        Phase(kind=<PhaseKind.PROBE: 'probe'>, stage=None, label='knn', layer_decay=None, body_trained=False)
        >>> Phase.from_name("layer decay 0.75").layer_decay
        0.75
        >>> Phase.from_name("fit_one_cycle").kind
        <PhaseKind.FIT: 'fit'>
        """
        for kind, default in _DEFAULT_NAMES.items():
            if name == default:
                return cls(kind)
        if name in PROBE_LABELS:
            return cls(PhaseKind.PROBE, label=str(name))
        if name in FASTAI_FIT_LABELS:  # a table does not say whether the body trained
            return cls(PhaseKind.FIT, label=str(name))
        words = str(name).split()
        if len(words) == 2 and words[0] == "stage" and words[1].isdigit():
            return cls(PhaseKind.GRADUAL, int(words[1]))
        prefix = _LAYER_DECAY_NAME + " "
        if str(name).startswith(prefix):
            try:
                return cls(PhaseKind.DISCRIMINATIVE, layer_decay=float(str(name)[len(prefix):]))
            except ValueError:
                pass
        return cls(PhaseKind.DISCRIMINATIVE, label=str(name))  # `fit_discriminative(phase="...")` labels


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a fit (the probe's single fit counts as one).

    Attributes:
        phase: the fit's `Phase`.
        epoch: the epoch's number across all fits (0, 1, ...).
        train_loss, valid_loss: the losses (NaN when not measured).
        metrics: the validation metrics by name (``{"accuracy": 0.9}``), in the learner's order.
        train_accuracy: accuracy on the training batches as trained (augmented, unless `on_features`); NaN when
            not measured.
        lrs: the epoch's peak learning rate of each layer group, stem first (empty for the probe).
        seconds: wall time of the epoch.
        extras: other figures of the epoch that are not metrics, e.g. the probe's ``C``.
        on_features: the epoch trained the head on cached features of the plain (not augmented) images.
    """

    phase: Phase
    epoch: int
    train_loss: float
    valid_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    train_accuracy: float = math.nan
    lrs: tuple[float, ...] = ()
    seconds: float = math.nan
    extras: dict[str, float] = field(default_factory=dict)
    on_features: bool = False

    def as_row(self) -> dict:
        """The record as one row of ``learn.history`` (the column order of the table)."""
        row = {"phase": self.phase.name, "epoch": self.epoch, "train_loss": self.train_loss,
               "valid_loss": self.valid_loss, **self.metrics, "train_accuracy": self.train_accuracy}
        row.update({f"lr_{i}": lr for i, lr in enumerate(self.lrs)})  # lr_0 is the stem
        row.update(self.extras)
        row["seconds"] = self.seconds
        return row

    def to_json(self) -> dict:
        return {"phase": self.phase.to_json(), "epoch": self.epoch, "train_loss": _num(self.train_loss),
                "valid_loss": _num(self.valid_loss), "metrics": {k: _num(v) for k, v in self.metrics.items()},
                "train_accuracy": _num(self.train_accuracy), "lrs": [float(x) for x in self.lrs],
                "seconds": _num(self.seconds), "extras": {k: _num(v) for k, v in self.extras.items()},
                "on_features": self.on_features}

    @classmethod
    def from_json(cls, data: dict) -> EpochRecord:
        return cls(Phase.from_json(data["phase"]), int(data["epoch"]), _float(data["train_loss"]),
                   _float(data["valid_loss"]), {k: _float(v) for k, v in data["metrics"].items()},
                   _float(data["train_accuracy"]), tuple(float(x) for x in data["lrs"]), _float(data["seconds"]),
                   {k: _float(v) for k, v in data["extras"].items()}, bool(data.get("on_features", False)))


def train_batches_name(records) -> str:
    """What the training accuracy of `records` was measured on: augmented batches, or cached plain features.

    >>> train_batches_name([])
    'augmented batches'
    """
    cached = [r.on_features for r in records]
    if cached and all(cached):
        return "cached features of the plain images"
    return "augmented batches; cached features when frozen" if any(cached) else "augmented batches"


def _num(x) -> float | None:
    """JSON has no NaN: store it as null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _float(x) -> float:
    return math.nan if x is None else float(x)


@dataclass(frozen=True)
class FineTuneChoice:
    """Which weights `TransferLearner.fine_tune` kept, and the validation figures it chose by.

    Attributes:
        kept: ``"frozen"`` (the weights after the frozen stage) or ``"fine-tuned"``.
        monitor: the validation figure compared (``"valid_loss"``, ``"accuracy"`` ...).
        frozen_value: `monitor` of the weights after the frozen stage.
        fine_tuned_value: `monitor` of the weights after fine-tuning.

    >>> print(FineTuneChoice("frozen", "valid_loss", 0.53, 0.91))
    fine_tune kept the frozen-stage weights (valid_loss 0.5300 after the frozen stage < 0.9100 after fine-tuning)
    """

    kept: str
    monitor: str
    frozen_value: float
    fine_tuned_value: float

    def __post_init__(self):
        if self.kept not in ("frozen", "fine-tuned"):
            raise ValueError(f"kept must be 'frozen' or 'fine-tuned', got {self.kept!r}")

    def __str__(self) -> str:
        frozen, tuned = self.frozen_value, self.fine_tuned_value
        if self.kept == "frozen":
            return (f"fine_tune kept the frozen-stage weights ({self.monitor} {frozen:.4f} after the frozen stage "
                    f"{_relation(frozen, tuned)} {tuned:.4f} after fine-tuning)")
        return (f"fine_tune kept the fine-tuned weights ({self.monitor} {tuned:.4f} {_relation(tuned, frozen)} "
                f"{frozen:.4f} after the frozen stage)")


def _relation(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b):
        return "vs"
    return "<" if a < b else ">" if a > b else "="


_STRUCTURAL = ("phase", "epoch", "train_loss", "valid_loss", "train_accuracy", "seconds")
_TABLE_EXTRAS = ("C",)  # the only non-metric figure easytransfer writes; a table does not say which columns are which


@dataclass
class History:
    """Every epoch of every fit so far, as typed `EpochRecord`s; ``learn.fit_history``.

    ``to_frame()`` gives the table ``learn.history`` shows (one row per epoch); ``metric_names`` are the
    validation metrics recorded, so nothing has to guess which columns are metrics.

    >>> h = History([EpochRecord(Phase(PhaseKind.FROZEN), 0, 0.9, 0.8, {"accuracy": 0.7}, lrs=(1e-3, 1e-3))])
    >>> h.metric_names, len(h), h[0].phase.name
    (['accuracy'], 1, 'frozen')
    >>> list(h.to_frame().columns)
    ['phase', 'epoch', 'train_loss', 'valid_loss', 'accuracy', 'train_accuracy', 'lr_0', 'lr_1', 'seconds']
    """

    records: list[EpochRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> EpochRecord:
        return self.records[i]

    def append(self, record: EpochRecord) -> None:
        self.records.append(record)

    @property
    def metric_names(self) -> list[str]:
        """The validation metrics recorded (``accuracy``, ``f1_score`` ...), in the order they first appear."""
        return list(dict.fromkeys(name for r in self.records for name in r.metrics))

    def last_run(self) -> list[EpochRecord]:
        """The records of the last fit: the run of consecutive epochs with the last epoch's phase."""
        run = []
        for record in reversed(self.records):
            if run and record.phase != run[-1].phase:
                break
            run.append(record)
        return run[::-1]

    def spans(self) -> list[tuple[Phase, int, int]]:
        """``(phase, first epoch, last epoch)`` for each run of consecutive epochs of the same phase."""
        spans = []
        for record in self.records:
            if spans and spans[-1][0] == record.phase:
                spans[-1] = (record.phase, spans[-1][1], record.epoch)
            else:
                spans.append((record.phase, record.epoch, record.epoch))
        return spans

    def to_frame(self) -> pd.DataFrame:
        """One row per epoch: ``phase``, ``epoch``, losses, metrics, ``train_accuracy``, ``lr_i``, extras, seconds."""
        return pd.DataFrame([r.as_row() for r in self.records])

    def to_json(self) -> list[dict]:
        return [r.to_json() for r in self.records]

    @classmethod
    def from_json(cls, data: list[dict]) -> History:
        return cls([EpochRecord.from_json(d) for d in data])

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> History:
        """A `History` from a ``learn.history`` table (e.g. read back with ``pd.read_csv``).

        A table does not say what its columns are: ``lr_i`` columns are rates, ``C`` is an extra, the other
        columns that are not losses, ``train_accuracy``, ``seconds`` or ``epoch`` are metrics.
        """
        if frame is None or len(frame) == 0:
            return cls()
        lr_cols = [c for c in frame.columns if str(c).startswith("lr_")]
        extra_cols = [c for c in frame.columns if c in _TABLE_EXTRAS]
        metric_cols = [c for c in frame.columns if c not in _STRUCTURAL and c not in lr_cols and c not in extra_cols]
        records = []
        for i, row in enumerate(frame.to_dict("records")):
            records.append(EpochRecord(
                Phase.from_name(row.get("phase", "frozen")), int(row.get("epoch", i)), _cell(row.get("train_loss")),
                _cell(row.get("valid_loss")), {c: _cell(row[c]) for c in metric_cols if not _missing(row[c])},
                _cell(row.get("train_accuracy")), tuple(_cell(row[c]) for c in lr_cols if not _missing(row[c])),
                _cell(row.get("seconds")), {c: _cell(row[c]) for c in extra_cols if not _missing(row[c])}))
        return cls(records)


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _cell(x) -> float:
    return math.nan if _missing(x) else float(x)


def as_history(history: History | pd.DataFrame | None) -> History:
    """`history` as a `History` (a ``learn.history`` DataFrame is converted; ``None`` is empty)."""
    if isinstance(history, History):
        return history
    return History.from_frame(history)


def metric_columns(history: History | pd.DataFrame) -> list[str]:
    """The validation metrics of a history (``accuracy``, ``f1_score`` ...), in column order.

    >>> probe = EpochRecord(Phase(PhaseKind.PROBE), 0, 0.3, 0.4, {"accuracy": 1.0}, extras={"C": 0.1})
    >>> metric_columns(History([probe]))
    ['accuracy']
    """
    return as_history(history).metric_names


def _mark_phases(ax, history: History):
    for k, (phase, first, last) in enumerate(history.spans()):
        if k % 2:
            ax.axvspan(first - 0.5, last + 0.5, color="0.93", zorder=0)
        ax.text((first + last) / 2, 1.0, phase.name, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=8, color="0.35")


def _widen_flat_axis(ax, margin: float = 0.05) -> None:
    """Show a flat curve (an accuracy that never moved) on a +-`margin` axis, not one scaled to float noise."""
    values = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
    if values and max(values) - min(values) < 1e-6:
        ax.set_ylim(min(values) - margin, max(values) + margin)


def plot_history(history: History | pd.DataFrame, axes=None, title: str | None = None) -> Figure:
    """Train and valid loss (left) and accuracy / metrics (right) per epoch, with the phases shaded.

    Args:
        history: ``learn.fit_history`` (or the ``learn.history`` DataFrame).
        axes: two matplotlib axes to draw on (e.g. one row of a grid); a new Figure when omitted.
        title: drawn above the figure (or above the left axes when `axes` are given).

    Returns:
        the matplotlib Figure.

    >>> fig = plot_history(learn.fit_history)  # doctest: +SKIP
    """
    history = as_history(history)
    if len(history) == 0:
        raise ValueError("The history is empty: train first (learn.fit_frozen(3)), then plot.")
    if axes is None:
        fig = Figure(figsize=(11, 4), layout="constrained")
        axes = fig.subplots(1, 2)
        if title:
            fig.suptitle(title)
    else:
        fig = axes[0].figure
        if title:
            axes[0].set_title(title, loc="left", pad=14)
    loss_ax, metric_ax = axes
    epochs = [r.epoch for r in history]
    loss_ax.plot(epochs, [r.train_loss for r in history], "o-", label="train loss")
    loss_ax.plot(epochs, [r.valid_loss for r in history], "o-", label="valid loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    train_accuracy = [r.train_accuracy for r in history]
    if any(not math.isnan(a) for a in train_accuracy):
        metric_ax.plot(epochs, train_accuracy, "o--", label=f"train accuracy ({train_batches_name(history.records)})")
    for name in history.metric_names:
        metric_ax.plot(epochs, [r.metrics.get(name, math.nan) for r in history], "o-", label=f"valid {name}")
    metric_ax.set_xlabel("epoch")
    metric_ax.set_ylabel("metric")
    if metric_ax.get_legend_handles_labels()[1]:
        metric_ax.legend()
    else:  # a detector's history: losses only (mAP needs an inference pass; learn.evaluate() gives it)
        metric_ax.text(0.5, 0.5, "no validation metric recorded", ha="center", va="center",
                       transform=metric_ax.transAxes, color="0.5")
    for ax in axes:
        _mark_phases(ax, history)
        ax.set_xticks(epochs)
        ax.ticklabel_format(axis="y", useOffset=False)  # ticks read 0.3333, not "1e-8+3.333333e-1"
        _widen_flat_axis(ax)
    return fig
