"""``easytransfer train --nproc N``: the same command again in N processes per machine, started by torchrun.

The first process (started by the user) resolves the output folder and runs ``python -m torch.distributed.run ...
-m easytransfer.cli train ...`` without the launch flags (torchrun would take ``--nproc`` for its own); torchrun
starts the ranks, which see ``RANK`` / ``WORLD_SIZE``: rank 0 prints ``distributed: N processes (backend
gloo|nccl)`` first, and all train under `TransferLearner.distributed` (rank 0 writes). The same happens when a
user runs ``torchrun ... -m easytransfer.cli train ...`` directly.
"""

from __future__ import annotations

import argparse
import subprocess

from ..choices import DEFAULT_MASTER_PORT
from ..errors import EasyTransferError
from ..tasks.registry import available_tasks
from .arguments import non_negative_int, positive_int, task_cli

__all__ = ["LAUNCH_FLAGS", "add_distributed_args", "announce_world", "needs_launch", "run_under_torchrun",
           "without_launch_flags"]

LAUNCH_FLAGS = ("--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port")  # each takes a value


def add_distributed_args(p: argparse.ArgumentParser) -> None:
    """``--nproc``, ``--nnodes``, ``--node-rank``, ``--master-addr``, ``--master-port`` (torchrun's own meaning)."""
    group = p.add_argument_group("several processes (torchrun)")
    group.add_argument("--nproc", type=positive_int, default=None,
                       help="train data-parallel in this many processes on this machine (one per GPU; on the CPU, "
                       "gloo processes); relaunches the command through torchrun")
    group.add_argument("--nnodes", type=positive_int, default=1, help="machines taking part (default 1)")
    group.add_argument("--node-rank", type=non_negative_int, default=0, help="this machine's number, 0 .. nnodes-1")
    group.add_argument("--master-addr", default=None, help="address of node 0 (needed with --nnodes > 1)")
    group.add_argument("--master-port", type=positive_int, default=DEFAULT_MASTER_PORT,
                       help=f"port of node 0's rendezvous (default {DEFAULT_MASTER_PORT})")


def needs_launch(args) -> bool:
    """Whether this process must start the torchrun processes: ``--nproc`` given and not yet under torchrun."""
    from ..train.distributed import World  # torch: not needed by --help

    return args.nproc is not None and World.from_env() is None


def without_launch_flags(argv: list[str]) -> list[str]:
    """`argv` without `LAUNCH_FLAGS` and their values (``--nproc 2`` or ``--nproc=2``).

    >>> without_launch_flags(["train", "data", "--nproc", "2", "--master-port=29600", "--bs", "8"])
    ['train', 'data', '--bs', '8']
    """
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCH_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in LAUNCH_FLAGS)):
            kept.append(arg)
    return kept


def announce_world() -> None:
    """On rank 0 of a distributed run, print ``distributed: N processes (backend gloo|nccl)``."""
    from ..train.distributed import World

    world = World.from_env()
    if world is not None and world.is_main:
        print(world, flush=True)


def run_under_torchrun(args, argv: list[str], out: str) -> None:
    """Run `argv` (this command's arguments) again under torchrun, with the output folder fixed to `out`.

    Raises:
        EasyTransferError: a bad combination of flags, or a rank that failed (torchrun's exit status).
    """
    from ..train.distributed import torchrun_command

    if not task_cli(args.task).DISTRIBUTED:  # the task's own word: has it been tested data-parallel
        tested = [t.name for t in available_tasks() if task_cli(t.name).DISTRIBUTED]
        raise EasyTransferError(f"--nproc trains {' and '.join(tested)} models; --task {args.task} has not been "
                                "tested distributed: leave out --nproc.")
    if args.node_rank >= args.nnodes:
        raise EasyTransferError(f"--node-rank {args.node_rank} must be below --nnodes {args.nnodes}.")
    cmd = torchrun_command([*without_launch_flags(argv), "--out", out], nproc=args.nproc, nnodes=args.nnodes,
                           node_rank=args.node_rank, master_addr=args.master_addr, master_port=args.master_port)
    status = subprocess.run(cmd, check=False).returncode
    if status != 0:
        raise EasyTransferError(f"the distributed run failed (torchrun exit status {status}); the first rank's "
                                "error is printed above.")
