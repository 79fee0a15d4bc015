"""Data-parallel training over several processes (torchrun): fastai's `DistributedTrainer`, made CPU-safe.

Every process (rank) holds the whole model and trains on its own share of each epoch's batches; gradients are
averaged by PyTorch's ``DistributedDataParallel`` (set up by accelerate through fastai's `DistributedTrainer`),
so the weights stay identical on every rank. What fastai 2.8 lacks, added here by subclassing (no patching):

- `RankShardDL` (in `easytransfer.train.rank_trainer`, which needs accelerate): fastai's `DistributedDL` whose
  index broadcast also works with the CPU backend (gloo); fastai's own calls ``.cuda()`` on the indices.
- `RankTrainer`: fastai's `DistributedTrainer` with that DataLoader, sync BatchNorm only on CUDA (fastai's
  default ``sync_bn=True`` refuses CPU modules), and accelerate told to stay on the CPU when the learner is.
- `SyncRecordCallback`: every rank takes rank 0's epoch figures, so early stopping, best-weight restore and
  checkpoints decide the same on all ranks.
- `World`, `is_main_process`, `one_process_view`: who this process is, and a block in which fastai, which reads
  the world size from the ``WORLD_SIZE`` variable at every metric, sees one process (work done by rank 0 alone).

`TransferLearner.distributed` puts them together; `torchrun_command` is what ``easytransfer train --nproc N`` runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.torch_core import num_distrib
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..choices import DEFAULT_MASTER_PORT
from ..devices import collective_device
from ..errors import EasyTransferError
from ..log import messages_off

__all__ = ["DEFAULT_MASTER_PORT", "RankSplit", "SyncRecordCallback", "World", "all_gather_rows", "any_rank",
           "broadcast_object", "distributed_run", "identical_on_all_ranks", "is_main_process",
           "one_process_view", "rank_trainer", "torchrun_command", "unwrap_model"]



@dataclass(frozen=True)
class World:
    """This process's place in a distributed run, as torchrun describes it in the environment.

    Attributes:
        rank: this process's number, 0 .. size-1 (rank 0 writes files and prints).
        size: the number of processes (``WORLD_SIZE``); 1 is a valid world.
        local_rank: the number on this machine, which is also its GPU (``LOCAL_RANK``).
        backend: ``"nccl"`` on CUDA, ``"gloo"`` on the CPU.

    >>> World.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, device=torch.device("cpu"))
    World(rank=1, size=2, local_rank=1, backend='gloo')
    >>> World.from_env({}) is None
    True
    """

    rank: int
    size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, environ=None, device: torch.device | None = None) -> World | None:
        """The world torchrun (or SLURM with the same variables) started this process in; ``None`` outside one."""
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ or "RANK" not in environ:
            return None
        device = torch.device(device) if device is not None else None
        use_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        return cls(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)),
                   "nccl" if use_cuda else "gloo")

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU (``cuda:LOCAL_RANK``) for a CUDA learner, else `device` unchanged."""
        return torch.device("cuda", self.local_rank) if torch.device(device).type == "cuda" else device

    def __str__(self) -> str:
        return f"distributed: {self.size} processes (backend {self.backend})"


def is_main_process() -> bool:
    """Whether this process writes files and prints: rank 0 of a distributed run, or any plain process.

    >>> is_main_process()
    True
    """
    return int(os.environ.get("RANK", 0)) == 0


@contextmanager
def one_process_view() -> Iterator[None]:
    """A block of work that one rank does alone (export, reports, a prediction pass) after a distributed fit.

    fastai reads the world size from ``WORLD_SIZE`` at every metric and prediction (``maybe_gather``), and would
    wait for the other ranks there; inside the block it sees a world of 1. The variables are restored after.

    >>> with one_process_view():
    ...     os.environ["WORLD_SIZE"]
    '1'
    """
    saved = {name: os.environ.get(name) for name in ("WORLD_SIZE", "RANK")}
    os.environ["WORLD_SIZE"], os.environ["RANK"] = "1", "0"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (during a distributed fit), else `model` itself.

    >>> unwrap_model(nn.Linear(2, 1))
    Linear(in_features=2, out_features=1, bias=True)
    """
    return model.module if isinstance(model, DistributedDataParallel) else model


def broadcast_object(obj, src: int = 0):
    """`obj` of rank `src` on every rank (any picklable object); `obj` itself outside a process group.

    >>> broadcast_object({"lr": 1e-3})
    {'lr': 0.001}
    """
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, device=collective_device())
    return holder[0]


def any_rank(flag: bool) -> bool:
    """Whether `flag` is true on any rank: one decision for all ranks.

    `flag` itself outside a process group, or where fastai sees one process (``WORLD_SIZE`` unset or 1, as in
    `one_process_view`), so a rank working alone never waits for the others.

    >>> any_rank(False)
    False
    """
    if num_distrib() <= 1 or not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's `rows` (same shape on all ranks), concatenated in rank order on the CPU.

    >>> all_gather_rows(torch.ones(2, 3)).shape  # no process group: the rows themselves
    torch.Size([2, 3])
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    device = collective_device()
    local = rows.to(device).contiguous()
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return torch.cat([p.cpu() for p in parts])


def rank_trainer(device: torch.device, sync_bn: bool | None = None):
    """A `RankTrainer` (fastai's `DistributedTrainer`, CPU-safe) for a learner on `device`.

    Raises:
        EasyTransferError: accelerate, which fastai's distributed module needs, is not installed.
    """
    try:
        from .rank_trainer import RankTrainer  # fastai.distributed, which needs accelerate
    except (ImportError, NameError) as e:  # fastai.distributed without accelerate fails with a NameError
        raise EasyTransferError("Distributed training uses fastai's DistributedTrainer, which needs accelerate: "
                                "pip install 'easytransfer[distributed]' (or pip install accelerate).") from e
    return RankTrainer(device, sync_bn=sync_bn)


@dataclass(frozen=True)
class RankSplit:
    """A pass over a DataLoader shared by the ranks of `world`: each runs its share, every rank gets all rows.

    >>> split = RankSplit(World(0, 2, 0, "gloo"))  # inside the process group  # doctest: +SKIP
    >>> rows = split.gather(model(split.shard(dl)), n=len(dl.dataset))  # doctest: +SKIP
    """

    world: World

    def shard(self, dl):
        """`dl` cut to this rank's consecutive share of its items (the last share padded by repeats)."""
        from .rank_trainer import RankShardDL

        return RankShardDL(dl, rank=self.world.rank, world_size=self.world.size, device=dl.device)

    def gather(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's `rows` in rank order, the padding dropped: the `n` rows of the whole DataLoader."""
        return all_gather_rows(rows)[:n]


class SyncRecordCallback(Callback):
    """After each epoch every rank takes rank 0's recorded figures (losses, metrics).

    fastai's metrics already gather the ranks' batches, so the figures agree up to rounding; taking rank 0's
    makes early stopping, best-weight restore and checkpoints decide exactly the same everywhere (a rank that
    stopped alone would leave the others waiting forever).
    """

    order = 51  # after Recorder (50) has written the epoch, before the history (55) and trackers read it

    def after_epoch(self):
        recorder = self.learn.recorder
        if not recorder.values:
            return
        values = broadcast_object([float(v) if v is not None else None for v in recorder.values[-1]])
        recorder.values[-1] = values
        recorder.log = recorder.log[:1] + values + recorder.log[1 + len(values):]


@contextmanager
def distributed_run(learn, *, sync_bn: bool | None = None, verbose: bool = True) -> Iterator[World | None]:
    """The machinery of `TransferLearner.distributed`: join torchrun's world and train data-parallel in it.

    Outside torchrun (no ``RANK`` / ``WORLD_SIZE``) nothing changes and the block yields ``None``.
    """
    world = World.from_env(device=learn.device)
    if world is None:
        yield None
        return
    if world.backend == "nccl":  # nccl's collectives run on the current GPU: this rank's own
        torch.cuda.set_device(world.local_rank)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend=world.backend)
    device = world.device(learn.device)
    if device != learn.device:
        learn.model.to(device)
        learn.dls.to(device)
        learn.device = device
    if verbose and world.is_main:
        print(world, flush=True)
    trainer = rank_trainer(device, sync_bn=sync_bn)
    sync = SyncRecordCallback()
    progress = [cb for cb in learn.cbs if isinstance(cb, ProgressCallback)] if not world.is_main else []
    learn.add_cbs([trainer, sync])
    learn.remove_cbs(progress)
    learn.world = world
    try:
        with ExitStack() as stack:
            if not world.is_main:  # rank 0 alone prints: progress bars, fit lines, messages
                stack.enter_context(redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
                stack.enter_context(messages_off())  # the library's messages (on standard error) too
            yield world
        if created:  # not after an error: the other ranks may never come
            dist.barrier()
    finally:
        if isinstance(learn.model, DistributedDataParallel):  # a fit interrupted (Ctrl-C) skips fastai's after_fit
            learn.model = learn.model.module
            learn.dls.loaders = trainer.old_dls
        learn.world = None
        learn.remove_cbs([trainer, sync])
        learn.add_cbs(progress)
        if created:
            dist.destroy_process_group()


def torchrun_command(argv: list[str], *, nproc: int, nnodes: int = 1, node_rank: int = 0,
                     master_addr: str | None = None, master_port: int = DEFAULT_MASTER_PORT,
                     module: str = "easytransfer.cli") -> list[str]:
    """The torchrun command that runs ``python -m module argv`` in `nproc` processes per machine.

    One machine (``nnodes=1``) uses torchrun's ``--standalone`` rendezvous; several need `master_addr`, the
    machine of node 0, reachable from the others at `master_port`.

    >>> torchrun_command(["train", "data"], nproc=2)[3:]
    ['--standalone', '--nproc_per_node', '2', '-m', 'easytransfer.cli', 'train', 'data']
    """
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        cmd += ["--standalone"]
    else:
        if not master_addr:
            raise EasyTransferError(f"--nnodes {nnodes} needs --master-addr: the address of node 0, which every "
                                    "machine can reach.")
        cmd += ["--nnodes", str(nnodes), "--node_rank", str(node_rank), "--master_addr", master_addr,
                "--master_port", str(master_port)]
    return cmd + ["--nproc_per_node", str(nproc), "-m", module, *argv]


def identical_on_all_ranks(model: nn.Module) -> bool:
    """Whether every rank holds the same weights as rank 0 (a check for tests and tools)."""
    flat = torch.cat([t.detach().float().flatten().cpu() for t in unwrap_model(model).state_dict().values()])
    ours = flat.numpy()
    theirs = broadcast_object(ours)
    return bool(np.array_equal(ours, theirs))
