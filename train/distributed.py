"""Process group and device of a training process, launched alone or by ``torchrun``.

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; the
process group is initialised from them (``init_method="env://"``), with NCCL on CUDA and Gloo on the
CPU. Without them the run is a single process and no group is created.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from train.config import ConfigError


@dataclass(frozen=True)
class DistributedContext:
    """rank / world_size: this process among all; local_rank: among those of its machine; device: its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as error:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from error


def pick_device(requested: str | None, local_rank: int) -> torch.device:
    """``requested`` ("cpu", "cuda", "cuda:K"), or cuda:LOCAL_RANK when CUDA is available, else the CPU.

    A bare "cuda" means this process's GPU, cuda:LOCAL_RANK.
    """
    if requested is None:
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise ConfigError(f"--device {requested}: not a torch device") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {requested}: CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(requested_device: str | None) -> DistributedContext:
    """Join the process group described by torchrun's variables (if any) and pick the device."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = pick_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Element-wise sum of ``values`` over all processes (a copy; unchanged for one process)."""
    total = values.detach().clone().to(context.device)
    if context.distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def barrier(context: DistributedContext) -> None:
    """Wait for every process (no-op for one process)."""
    if context.distributed:
        dist.barrier()
