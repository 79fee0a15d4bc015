"""fastai's distributed classes made CPU-safe by subclassing: `RankShardDL` and `RankTrainer`.

This module imports ``fastai.distributed``, which needs accelerate (``pip install 'easytransfer[distributed]'``);
`easytransfer.train.distributed` imports it only when a distributed run starts.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from fastai.distributed import DistributedDL, DistributedTrainer

from ..devices import collective_device
from ..errors import EasyTransferError

__all__ = ["RankShardDL", "RankTrainer"]


class RankShardDL(DistributedDL):
    """fastai's `DistributedDL` (each rank gets its share of every epoch's items, in rank 0's order), broadcasting
    that order on the process group's own device: the CPU for gloo, the GPU for nccl (fastai calls ``.cuda()``).

    >>> RankShardDL(dls.train)  # inside a process group  # doctest: +SKIP
    """

    def _broadcast(self, t, rank):
        t = torch.as_tensor(t, dtype=torch.long, device=collective_device())
        dist.broadcast(t, rank)
        return t.cpu().tolist()


class RankTrainer(DistributedTrainer):
    """fastai's `DistributedTrainer` (the model wrapped in DDP by accelerate, the DataLoaders sharded per rank)
    that also runs on the CPU: `RankShardDL` shards the data, BatchNorm is synchronised only on CUDA.

    Args:
        device: the learner's device (``cpu`` keeps accelerate on the CPU, with the gloo backend).
        sync_bn: replace BatchNorm by ``nn.SyncBatchNorm`` (default: on CUDA only; CPU modules refuse it).

    >>> learn.add_cb(RankTrainer(learn.device))  # inside a process group  # doctest: +SKIP
    """

    def __init__(self, device: torch.device, sync_bn: bool | None = None):
        on_cuda = torch.device(device).type == "cuda"
        if sync_bn and not on_cuda:
            raise EasyTransferError("sync_bn=True needs CUDA (nn.SyncBatchNorm refuses CPU modules); leave "
                                    "sync_bn=None on the CPU.")
        super().__init__(sync_bn=on_cuda if sync_bn is None else sync_bn, cpu=not on_cuda)

    def _wrap_dl(self, dl):
        return dl if isinstance(dl, DistributedDL) else RankShardDL(dl, device=dl.device)
