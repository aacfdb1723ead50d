"""Data loaders of a run: the sharded, shuffled, resumable training loader and the validation loader."""

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from train.config import TrainConfig
from train.dataset import MultiViewFaceDataset, collate_samples
from train.distributed import DistributedContext


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch, one share per process) that can skip the
    first ``start`` indices of its share, to continue an epoch after ``--resume``."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


def make_loaders(
    config: TrainConfig, context: DistributedContext, num_vertices: int
) -> tuple[DataLoader, DataLoader | None, ResumableSampler]:
    """Training loader (sharded and shuffled) and validation loader (each process a disjoint share)."""
    train_set = MultiViewFaceDataset(config.data, num_vertices=num_vertices)
    sampler = ResumableSampler(train_set, context.world_size, context.rank, config.seed)
    # A private generator keeps the loader from consuming the global RNG (dropout), so a resumed
    # run draws the same random numbers as an uninterrupted one.
    common = {"collate_fn": collate_samples, "num_workers": config.workers, "pin_memory": context.device.type == "cuda"}
    train_loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(config.seed),
        **common,
    )
    val_loader = None
    if config.val_data:
        val_set = MultiViewFaceDataset(config.val_data, num_vertices=num_vertices)
        share = Subset(val_set, range(context.rank, len(val_set), context.world_size))
        val_loader = DataLoader(share, batch_size=config.batch_size, shuffle=False, **common)
    return train_loader, val_loader, sampler
