"""Data plumbing of the torch handle: datasets that name their examples, and the batches
of each epoch's plan (this rank's share of it under ``torch.distributed``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from torch.utils.data import Dataset, Sampler

from sadp_core.errors import SADPError

from . import _distributed

__all__ = ["EpochSource", "IndexedDataset", "PlanBatchSampler"]


class EpochSource(Protocol):
    """What a :class:`PlanBatchSampler` needs of its handle (the torch handle is one).

    The data side depends on this protocol only, so that the handle may build samplers
    without the two modules importing each other.
    """

    _next_epoch: int

    def _begin_epoch(self) -> Any:
        """Start the next epoch; return its plan (``.indices``, ``.epoch``)."""

    def _end_epoch(self, epoch: int) -> None:
        """Close epoch ``epoch`` once its batches have all been handed out."""

    def _upcoming_size(self) -> int:
        """Examples in the epoch under way, or else in the next one."""

    def _check_next_epoch(self, epoch: int) -> None:
        """Raise ``SADPError`` if the next pass cannot be epoch ``epoch``."""


class IndexedDataset(Dataset):  # type: ignore[type-arg]
    """A dataset whose items are ``(index, item)``: the index tells the handle which example it is."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


class PlanBatchSampler(Sampler[list[int]]):
    """Batches of the handle's plans: each pass over it is the next epoch.

    It runs in the ``DataLoader``'s main process (workers only receive the index lists),
    so it works with ``num_workers > 0`` and ``pin_memory`` as any batch sampler does.
    Under an initialised ``torch.distributed`` process group, each rank gets its share of
    the plan, padded (or, with ``drop_last``, cut) as ``DistributedSampler`` does.
    """

    def __init__(self, handle: EpochSource, batch_size: int, drop_last: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SADPError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(drop_last, bool):
            raise SADPError(f"drop_last must be True or False, got {drop_last!r}")
        self.handle, self.batch_size, self.drop_last = handle, batch_size, drop_last

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (as ``DistributedSampler.set_epoch``; optional:
        without it each pass is the epoch after the last one)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise SADPError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.handle._check_next_epoch(epoch)
        self.handle._next_epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.handle._begin_epoch()
        indices = _distributed.shard(plan.indices, *_distributed.world(), self.drop_last).tolist()
        stop = len(indices) - len(indices) % self.batch_size if self.drop_last else len(indices)
        try:
            for start in range(0, stop, self.batch_size):
                yield indices[start : start + self.batch_size]
        finally:
            self.handle._end_epoch(plan.epoch)

    def __len__(self) -> int:
        """Batches in the pass under way, or else in the next pass (without drawing its plan)."""
        ranks, _ = _distributed.world()
        size = _distributed.shard_length(self.handle._upcoming_size(), ranks, self.drop_last)
        return size // self.batch_size if self.drop_last else -(-size // self.batch_size)
