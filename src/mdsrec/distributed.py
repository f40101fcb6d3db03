"""Training on several processes (``torchrun``): torch.distributed with gloo on the CPU and NCCL on CUDA.

``torchrun --nproc-per-node N -m mdsrec train ...`` (or ``--nnodes M --rdzv-endpoint HOST:PORT`` across machines)
starts N processes that each build the same model and the same epoch's global batches (the batch order depends
only on seed and epoch); every global batch is split into N contiguous slices of rows, one per process, and the
gradients are averaged by DistributedDataParallel. Each process's loss is weighted by its share of the batch's
trained positions, so the averaged gradient is the gradient of the global batch's mean loss: the objective and the
learning rate mean what they mean on one process. Evaluation splits the users' batches over the processes and
gathers every rank, so metrics equal the single-process ones. Process 0 alone writes (and locks) the run directory.

Exact equivalence holds for losses that are means over trained positions (every model but MISSRec's diversity
term, which is normalised by the batch's largest interest count, and BERT4Rec's random cloze masks); randomness
(dropout, masks, Gumbel noise) follows each process's own generator, seeded alike, so it differs from one process
with the same seed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes (world 1: a plain single-process run)."""

    rank: int = 0
    world: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Group()


def writes() -> bool:
    """Whether this process writes shared outputs (results files, markers): process 0 of a torchrun launch, or a
    plain single process. Read from torchrun's RANK, so it holds before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def from_env(device: torch.device) -> tuple[Group, torch.device]:
    """The process group torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK), initialised once,
    and this process's device (``cuda:LOCAL_RANK`` on CUDA); SINGLE outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size(), str(dist.get_backend())), device


def all_sum(value: float, group: Group) -> float:
    """The sum of ``value`` over the processes."""
    if not group.active:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0])


def shard(items: Sequence[T], group: Group) -> list[T]:
    """Every world-th item, starting at this rank (evaluation batches spread over the processes)."""
    return list(items[group.rank :: group.world]) if group.active else list(items)


def gather_in_order(local: list[Any], total: int, group: Group) -> list[Any]:
    """The items each rank computed for ``shard`` of a list of ``total``, back in the list's order."""
    if not group.active:
        return local
    parts: list[list[Any] | None] = [None] * group.world
    dist.all_gather_object(parts, local)
    out: list[Any] = [None] * total
    for r, part in enumerate(parts):
        assert part is not None
        out[r :: group.world] = part
    return out


def broadcast(obj: T, group: Group) -> T:
    """Process 0's ``obj`` on every process."""
    if not group.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(group: Group) -> None:
    if group.active:
        dist.barrier()


class CommTimer:
    """Seconds spent communicating under DistributedDataParallel: each gradient bucket's allreduce, from the bucket
    being ready to its allreduce finishing (summed over buckets; it overlaps the backward pass of the buckets still
    being computed), installed as DDP's communication hook, which averages exactly as DDP's built-in allreduce does
    (divide by the world size, then sum); plus what the caller adds (e.g. the per-step loss sum)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def install(self, ddp: torch.nn.parallel.DistributedDataParallel) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        # no annotations: DDP checks them against the real objects, which `from __future__ import annotations`
        # turns into strings
        def timed_allreduce(timer, bucket):
            t0 = time.perf_counter()

            def done(fut: torch.futures.Future[torch.Tensor]) -> torch.Tensor:
                timer.seconds += time.perf_counter() - t0
                return fut.value()

            return default_hooks.allreduce_hook(None, bucket).then(done)  # type: ignore[arg-type]

        ddp.register_comm_hook(self, timed_allreduce)

    def take(self) -> float:
        """The seconds counted since the last call."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds
