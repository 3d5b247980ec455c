"""Which epochs see all data and which are pruned (DESIGN.md section 4)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .errors import SADPError

__all__ = ["Phase", "Schedule"]

Phase = Literal["warmup", "prune", "anneal"]


@dataclass(frozen=True)
class Schedule:
    """Warm-up epochs with all data, then pruning epochs, then annealing epochs with all data.

    Annealing follows InfoBatch (Qin et al., ICLR 2024): pruning stops at epoch
    ``ceil((1 - anneal_fraction) * epochs)``; the remaining epochs use every example with
    weight 1, which removes the last traces of the pruning's bias and variance.

    Example:
        >>> s = Schedule(epochs=8, warmup_epochs=1, anneal_fraction=0.125)
        >>> [s.phase(e) for e in range(8)]  # doctest: +NORMALIZE_WHITESPACE
        ['warmup', 'prune', 'prune', 'prune', 'prune', 'prune', 'prune', 'anneal']
        >>> s.pruned_epochs
        6
    """

    epochs: int
    warmup_epochs: int = 1
    anneal_fraction: float = 0.125

    def __post_init__(self) -> None:
        _check_count("epochs", self.epochs, minimum=1)
        _check_count("warmup_epochs", self.warmup_epochs, minimum=0)
        fraction = self.anneal_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise SADPError(f"anneal_fraction must be a number in [0, 1], got {fraction!r}")

    @property
    def anneal_start(self) -> int:
        """The first epoch that uses all data again."""
        start = math.ceil((1 - self.anneal_fraction) * self.epochs - 1e-9)
        return max(start, self.warmup_epochs)

    @property
    def pruned_epochs(self) -> int:
        """How many epochs are pruned."""
        return max(0, min(self.anneal_start, self.epochs) - self.warmup_epochs)

    def phase(self, epoch: int) -> Phase:
        """``"warmup"``, ``"prune"`` or ``"anneal"`` for a 0-based epoch."""
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise SADPError(f"epoch must be an int, got {type(epoch).__name__}")
        if not 0 <= epoch < self.epochs:
            raise SADPError(
                f"epoch {epoch} is outside the schedule of {self.epochs} epochs (0..{self.epochs - 1}); "
                "create the Pruner with the number of epochs you train for"
            )
        if epoch < self.warmup_epochs:
            return "warmup"
        if epoch >= self.anneal_start:
            return "anneal"
        return "prune"


def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SADPError(f"{name} must be an integer >= {minimum}, got {value!r}")
