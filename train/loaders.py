"""Data loaders of a run: batches of equal view count, shuffled, sharded over processes and resumable."""

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from train.config import TrainConfig
from train.dataset import MultiViewFaceDataset, collate_samples
from train.distributed import DistributedContext


class ViewGroupedBatches(Sampler[list[int]]):
    """The batches of one epoch for one process: samples of equal view count batched together.

    Per epoch (``set_epoch``), every process computes the same global list: the sample indices of each
    view count, shuffled by a generator seeded with ``seed + epoch`` (unless ``shuffle`` is False),
    cut into batches of ``batch_size`` (the last of each view count may be smaller), and the batches
    shuffled. With ``pad`` the list is extended by its first batches to a multiple of ``num_replicas``
    (so every process takes the same number of steps, as DistributedDataParallel needs); process
    ``rank`` takes batches ``rank, rank + num_replicas, ...``. ``start`` skips the first batches of
    this process's share (to continue an epoch after ``--resume``).

    Args:
        view_counts: number of views of each sample of the data set.
    """

    def __init__(
        self,
        view_counts: Sequence[int],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        pad: bool = True,
    ) -> None:
        self.view_counts = list(view_counts)
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.pad = pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_batches(self) -> list[list[int]]:
        """This process's batches of the current epoch (all of them, ``start`` not applied)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = []
        for views in sorted(set(self.view_counts)):
            indices = torch.tensor([i for i, count in enumerate(self.view_counts) if count == views])
            if self.shuffle:
                indices = indices[torch.randperm(len(indices), generator=generator)]
            batches += [chunk.tolist() for chunk in indices.split(self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        if self.pad and len(batches) % self.num_replicas:
            batches += batches[: self.num_replicas - len(batches) % self.num_replicas]
        return batches[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.epoch_batches()[self.start :])

    def __len__(self) -> int:
        return max(len(self.epoch_batches()) - self.start, 0)


def make_loaders(
    config: TrainConfig, context: DistributedContext, num_vertices: int
) -> tuple[DataLoader, DataLoader | None, ViewGroupedBatches]:
    """Training loader (sharded, shuffled, view-grouped batches) and validation loader (each process a
    disjoint share, in order); returns them and the training batch sampler."""
    train_set = MultiViewFaceDataset(config.data, num_vertices=num_vertices)
    sampler = ViewGroupedBatches(
        train_set.view_counts, config.batch_size, context.world_size, context.rank, config.seed
    )
    # A private generator keeps the loader from consuming the global RNG (dropout), so a resumed
    # run draws the same random numbers as an uninterrupted one.
    common = {"collate_fn": collate_samples, "num_workers": config.workers, "pin_memory": context.device.type == "cuda"}
    train_loader = DataLoader(
        train_set, batch_sampler=sampler, generator=torch.Generator().manual_seed(config.seed), **common
    )
    val_loader = None
    if config.val_data:
        val_set = MultiViewFaceDataset(config.val_data, num_vertices=num_vertices)
        val_batches = ViewGroupedBatches(
            val_set.view_counts, config.batch_size, context.world_size, context.rank, shuffle=False, pad=False
        )
        val_loader = DataLoader(
            val_set, batch_sampler=val_batches, generator=torch.Generator().manual_seed(config.seed), **common
        )
    return train_loader, val_loader, sampler
