"""``easytransfer train``, ``lr-find`` and ``demo``: the commands that fit a model.

The task's part comes from its command-line module (the registry's ``Task.cli``, `task_cli`), which every task
writes with the same names: ``HEADS`` (for ``--head``'s help), ``TRAIN_FLAGS`` / ``MODEL_FLAGS`` (the flags only it
takes), ``add_train_arguments(group, command)``, ``add_evaluate_arguments(group)``,
``add_predict_arguments(group)``, ``check_train_args(args)``, ``build_learner(args, common=, pretrained=, head=)``,
``finish_training(learn, args, out)``, ``evaluate(predictor, args)`` and ``predict(predictor, args)``. Those
modules import torch only inside their functions, so ``--help`` loads none.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path

from ..choices import AUG_PRESETS, PRECISIONS
from ..errors import EasyTransferError
from ..tasks.registry import available_tasks, get_task
from .arguments import flag, learning_rate, non_negative_int, positive_int, task_cli, task_names
from .launch import add_distributed_args, announce_world, needs_launch, run_under_torchrun
from .outputs import output_file, output_folder

__all__ = ["HANDLERS", "add_parsers"]


def _data_args(p: argparse.ArgumentParser, command: str) -> None:
    """The flags every task's ``train`` / ``lr-find`` takes, then one group per registered task (its ``cli``)."""
    tasks = available_tasks()
    p.add_argument("data", nargs="?", default=None,
                   help="classification: a folder of class sub-folders (or train/ + valid/), or a CSV with path,label "
                   "columns; the other tasks: the image folder (or --images)")
    p.add_argument("--task", choices=task_names(), default=tasks[0].name,
                   help="; ".join(f"{t.name}: {t.summary}" for t in tasks) + f" (default {tasks[0].name})")
    p.add_argument("--arch", default="efficientnet_lite0", help="architecture (default efficientnet_lite0)")
    p.add_argument("--valid-pct", type=float, default=0.2, help="validation share per class (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split and the training (default 42)")
    p.add_argument("--bs", type=positive_int, default=None,
                   help="batch size (default " + ", ".join(f"{t.name} {t.defaults.bs}" for t in tasks) + ")")
    p.add_argument("--size", type=positive_int, default=None,
                   help="image size (default: the model's; segmentation: a multiple of 32; detection 320)")
    p.add_argument("--aug", choices=AUG_PRESETS, default=None,
                   help="augmentation preset (default " + ", ".join(f"{t.name} {t.defaults.aug}" for t in tasks)
                   + "; flips also for inspection images with small defects; detection has no strong)")
    p.add_argument("--weights", default=None, help="a local .safetensors / .pth weights file for --arch")
    p.add_argument("--random-init", action="store_true", help="no pre-trained weights (for tests and baselines)")
    p.add_argument("--images", default=None, help="the image folder (instead of DATA), for the tasks that pair "
                   "images with masks or boxes")
    heads = [(t, task_cli(t.name).HEADS) for t in tasks]
    p.add_argument("--head", default=None, help="; ".join(f"{t.name}: {', '.join(h)} (default {t.defaults.head})"
                                                          for t, h in heads if h))
    for task in tasks:
        task_cli(task.name).add_train_arguments(p.add_argument_group(f"--task {task.name}"), command)


def add_parsers(commands) -> None:
    """Add ``train``, ``lr-find`` and ``demo`` to `commands` (the sub-parsers of `build_parser`)."""
    train = commands.add_parser("train", help="the whole recipe on your images; writes a model bundle and a report",
                                description="Train the head with the body frozen, unfreeze, fine-tune with "
                                "discriminative learning rates, and write the model bundle, history, plots and an "
                                "HTML report to --out.")
    _data_args(train, "train")
    train.add_argument("--frozen-epochs", type=non_negative_int, default=3, help="head-only epochs (default 3)")
    train.add_argument("--epochs", type=non_negative_int, default=None,
                       help="fine-tuning epochs (default: the recipe's, 5, or 10 where the frozen stage chose a "
                            "larger input; 0: none)")
    train.add_argument("--lr", type=learning_rate, default=None,
                       help="head learning rate, or 'find' (default: the task's, 3e-3; a detector 0.01 at bs 8)")
    train.add_argument("--lr-max", type=learning_rate, default=None,
                       help="fine-tuning head rate, or 'find' (default: the task's, 1e-3; a detector 0.01 at bs 8)")
    train.add_argument("--out", default=None, help="output folder (default easytransfer_runs/train-<time>); "
                       "checkpoints go to OUT/checkpoints until the model is exported")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --out from its checkpoints (same data and arguments)")
    train.add_argument("--mixed-precision", choices=PRECISIONS, default="no",
                       help="fp16 or bf16 mixed precision on a GPU (fastai's to_fp16 / to_bf16); ignored on the CPU")
    add_distributed_args(train)

    lr_find = commands.add_parser("lr-find", help="sweep the learning rate and print the suggestions",
                                  description="Run the LR finder on DATA (body frozen unless --unfrozen) and print "
                                  "valley / steep / minimum / slide; --plot writes the curve.")
    _data_args(lr_find, "lr-find")
    lr_find.add_argument("--unfrozen", action="store_true", help="sweep with every layer group unfrozen")
    lr_find.add_argument("--num-it", type=positive_int, default=None,
                         help="iterations (default 100 frozen, 50 unfrozen)")
    lr_find.add_argument("--plot", default=None, help="write the plot to this PNG file")

    demo = commands.add_parser(
        "demo",
        help="train EfficientNet-Lite0 (real ImageNet weights, offline) on a textile-inspection task",
        description="Offline demo: EfficientNet-Lite0 with packaged ImageNet weights learns to tell nominal "
        "textile images from local and global defects (conformal-clip-data), then reports on held-out "
        "test images.",
    )
    demo.add_argument("--epochs", type=positive_int, default=4, help="fine-tuning epochs after unfreezing (default 4)")
    demo.add_argument("--frozen-epochs", type=positive_int, default=3, help="head-only epochs first (default 3)")
    demo.add_argument("--limit", type=non_negative_int, default=150, help="images per class, 0 for all (default 150)")
    demo.add_argument("--out", default=None, help="output folder (default easytransfer_runs/demo-<time>)")
    demo.add_argument("--seed", type=int, default=42, help="seed of the sampling and the splits")
    demo.add_argument("--bs", type=positive_int, default=16, help="batch size (default 16)")


def _check_task_flags(args) -> None:
    """Flags of another task are an error that names the flag and the --task it belongs to; then the task's own
    checks (its images, masks, boxes, test set), all before torch is imported."""
    for task in available_tasks():
        used = [flag(n) for n in task_cli(task.name).TRAIN_FLAGS if getattr(args, n, None) is not None]
        if used and args.task != task.name:
            raise EasyTransferError(f"{' '.join(used)} {'is' if len(used) == 1 else 'are'} for --task {task.name}; "
                                    f"add --task {task.name}, or leave {'it' if len(used) == 1 else 'them'} out.")
    task_cli(args.task).check_train_args(args)


def _learner(args):
    _check_task_flags(args)  # before importing torch: a wrong flag fails at once
    from fastai.torch_core import set_seed

    set_seed(args.seed)
    defaults = get_task(args.task).defaults
    common = dict(bs=args.bs or defaults.bs, size=args.size, aug=args.aug or defaults.aug, seed=args.seed,
                  valid_pct=args.valid_pct)
    pretrained = dict(pretrained=not args.random_init, weights=args.weights)
    return task_cli(args.task).build_learner(args, common=common, pretrained=pretrained,
                                             head=args.head or defaults.head)


def _fit(learn, args, checkpoints: Path) -> None:
    """The recipe's stages (`_fit_stages`), in mixed precision when asked (a GPU only) and data-parallel under
    torchrun (`TransferLearner.distributed`; a plain process is unchanged)."""
    if args.mixed_precision != "no":  # a GPU only; on the CPU one line says it is off
        {"fp16": learn.to_fp16, "bf16": learn.to_bf16}[args.mixed_precision]()
    with learn.distributed(verbose=False):  # `announce_world` said it at the start
        _fit_stages(learn, args, checkpoints)


def _fit_stages(learn, args, checkpoints: Path) -> None:
    """The head with the body frozen, then everything with discriminative rates; each stage checkpoints into its
    own folder under `checkpoints` and, with ``--resume``, continues from it."""
    if args.frozen_epochs:
        learn.checkpoint_dir = checkpoints / "frozen"
        learn.fit_frozen(args.frozen_epochs, lr=args.lr, resume=_resumable(args, learn.checkpoint_dir))
    if args.epochs != 0:  # None: the recipe's default
        learn.unfreeze()
        learn.checkpoint_dir = checkpoints / "fine-tune"
        learn.fit_discriminative(args.epochs, lr_max=args.lr_max, resume=_resumable(args, learn.checkpoint_dir))


def _resumable(args, folder: Path) -> bool:
    from ..train.checkpoint import LAST_NAME

    return bool(args.resume) and (folder / LAST_NAME).is_file()


def _checkpoint_folder(args, out: Path) -> Path:
    checkpoints = out / "checkpoints"
    if args.resume and not checkpoints.is_dir():
        raise EasyTransferError(f"--resume: {str(out)!r} has no checkpoints/ folder, so there is nothing to resume; "
                                "give the --out of the interrupted run, or leave --resume out.")
    return checkpoints


def _bars_to_stderr():
    """On a terminal, fastai's bars and epoch table (progress, not results) go to standard error, so standard
    output holds only the results; piped, `_bars_on_a_terminal` already shows no bars."""
    return contextlib.redirect_stdout(sys.stderr) if sys.stdout.isatty() else contextlib.nullcontext()


@contextlib.contextmanager
def _bars_on_a_terminal(learn):
    """fastai's epoch bars only when standard output is a terminal; piped or redirected, one plain line per epoch
    (``epoch 0  train_loss 1.0536  valid_loss 1.1386  accuracy 0.3333  time 00:00``) instead of bars."""
    if sys.stdout.isatty():
        yield
        return

    def epoch_line(log) -> None:
        names = learn.recorder.metric_names
        print("  ".join(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"
                        for name, value in zip(names, log)), flush=True)

    logger, learn.logger = learn.logger, epoch_line
    try:
        with learn.no_bar():
            yield
    finally:
        learn.logger = logger


def _write_history(learn, out: Path) -> None:
    learn.history.to_csv(out / "history.csv", index=False)
    if len(learn.history):
        learn.plot_history().savefig(out / "history.png", dpi=100)


def _train(args) -> None:
    import time

    if args.resume and not args.out:
        raise EasyTransferError("--resume needs the --out folder of the interrupted run.")
    out = output_folder(args.out, "--out") if args.out else Path("easytransfer_runs") / time.strftime(
        "train-%Y%m%d-%H%M%S")
    checkpoints = _checkpoint_folder(args, out)
    _check_task_flags(args)
    if needs_launch(args):  # the ranks get this output folder: their clocks may differ
        run_under_torchrun(args, args.argv, str(out))
        return
    from ..train.distributed import is_main_process, one_process_view

    announce_world()
    main = is_main_process()  # rank 0 of a distributed run (or a plain process) prints and writes
    learn = _learner(args)  # bad data or an unknown architecture fail here, before anything is written
    if main:
        out.mkdir(parents=True, exist_ok=True)
        n_valid = len(learn.dls.valid.dataset)
        test_items = getattr(getattr(learn.dls, "recipe", None), "test_items", None)
        held_out = f", {len(test_items)} held-out test" if test_items is not None else ""
        print(f"{learn.spec.name} ({args.task}): {len(learn.dls.train.dataset)} training, {n_valid} validation"
              f"{held_out} images, classes {list(learn.dls.vocab)}; weights: {learn.spec.weights}")
    with _bars_on_a_terminal(learn):
        try:
            with _bars_to_stderr():
                _fit(learn, args, checkpoints)
        except KeyboardInterrupt:
            if main:
                print(f"Interrupted; the finished epochs are checkpointed in {checkpoints}. Continue with the same "
                      f"command and --resume --out {out}", file=sys.stderr)
            raise
        if not main:
            return
        with one_process_view():  # the other ranks are done: fastai must not wait for them
            _write_outputs(learn, args, out, checkpoints)


def _write_outputs(learn, args, out: Path, checkpoints: Path) -> None:
    """The bundle and the history, then the task's own results (its ``cli.finish_training``)."""
    learn.export(out / "model")
    shutil.rmtree(checkpoints, ignore_errors=True)  # the bundle is the result; the checkpoints only served a resume
    _write_history(learn, out)
    task_cli(args.task).finish_training(learn, args, out)


def _lr_find(args) -> None:
    if args.plot:
        output_file(args.plot, "--plot", "lr_find.png")
    learn = _learner(args)
    if args.unfrozen:
        learn.unfreeze()
    with _bars_on_a_terminal(learn), _bars_to_stderr():
        result = learn.lr_find(num_it=args.num_it)
    for name, value in result.suggestions.items():
        print(f"{name}: {value:.2e}")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        result.plot().savefig(args.plot, dpi=100)
        print(f"plot written to {args.plot}")


def _demo(args) -> None:
    if args.out:
        output_folder(args.out, "--out")
    from .demo import run_demo

    run_demo(epochs=args.epochs, frozen_epochs=args.frozen_epochs, limit=args.limit or None, out=args.out,
             seed=args.seed, bs=args.bs)


HANDLERS = {"train": _train, "lr-find": _lr_find, "demo": _demo}
