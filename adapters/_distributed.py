"""``torch.distributed`` support of the torch handle: plan shards and the score exchange.

Under an initialised process group every rank draws the same plan (same seed, same score
table), trains a disjoint share of it (:func:`shard`, padded as ``DistributedSampler``
pads), and sends the scores it computed to the others (:func:`exchange`), so that the
score tables stay identical on every rank.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["active", "exchange", "shard", "world"]


def world() -> tuple[int, int]:
    """``(world size, rank)`` of the default process group, ``(1, 0)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def active() -> bool:
    """Whether several processes train together (a process group of more than one rank)."""
    return world()[0] > 1


def shard(indices: np.ndarray, size: int, rank: int, drop_last: bool) -> np.ndarray:
    """This rank's share of an epoch's indices, as ``DistributedSampler`` cuts them.

    The indices are padded by repeating them from the start until every rank has as many
    (or, with ``drop_last``, cut to a multiple of ``size``); rank ``r`` takes every
    ``size``-th index from position ``r``. The shares are disjoint (up to the padding) and
    their union is the plan.

    Example:
        >>> import numpy as np
        >>> [shard(np.arange(5), 2, rank, drop_last=False).tolist() for rank in (0, 1)]
        [[0, 2, 4], [1, 3, 0]]
        >>> [shard(np.arange(5), 2, rank, drop_last=True).tolist() for rank in (0, 1)]
        [[0, 2], [1, 3]]
    """
    if size == 1:
        return indices
    count = len(indices)
    if drop_last:
        total = count - count % size
        return indices[rank:total:size]
    total = -(-count // size) * size
    if total > count and count:
        indices = np.resize(indices, total)  # repeats from the start
    return indices[rank:total:size]


def shard_length(count: int, size: int, drop_last: bool) -> int:
    """How many indices each rank gets from an epoch of ``count`` (see :func:`shard`)."""
    return count // size if drop_last else -(-count // size)


def exchange(indices: np.ndarray, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every rank's ``(indices, values)``, in rank order, on every rank.

    Two collectives on the default group: the counts, then one ``[2, max count]`` float64
    tensor per rank (indices below 2**53 are exact in float64). On NCCL the tensors go
    through the current CUDA device.
    """
    size, _ = world()
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    count = torch.tensor([indices.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.empty_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    longest = max(int(c.item()) for c in counts)
    payload = torch.zeros((2, longest), dtype=torch.float64)
    payload[0, : indices.shape[0]] = torch.from_numpy(indices.astype(np.float64))
    payload[1, : indices.shape[0]] = torch.from_numpy(values.astype(np.float64, copy=False))
    payload = payload.to(device)
    gathered = [torch.empty_like(payload) for _ in range(size)]
    dist.all_gather(gathered, payload)
    result = []
    for received, received_count in zip(gathered, counts, strict=True):
        rows = received[:, : int(received_count.item())].cpu().numpy()
        result.append((rows[0].astype(np.int64), rows[1].copy()))
    return result
