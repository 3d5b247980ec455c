"""A training run of a torch network (snnTorch or SpikingJelly) through ``sadp_core.attach``.

Each run trains as a user would: ``h = sadp_core.attach(model, ...)``, then for each epoch
one pass over ``h.batch_sampler(batch_size)``, and the loss of every batch through
``h.weighted_loss(per_example_losses, indices)``; Adam with a cosine schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import sadp_core

from ..data import Data
from ..methods import attach_options
from ..models.torch import build_model, per_example_loss, predict, reset
from .common import Run


@dataclass
class TorchRun(Run):
    """One torch run with its own model, optimizer, schedule and handle."""

    def _setup(self) -> None:
        spec, settings = self.spec, self.own_settings
        torch.manual_seed(spec.seed)  # the same initial weights for every method of a comparison
        self.model = build_model(
            spec.framework, spec.model, self.data.side, hidden=settings.hidden, steps=settings.steps
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=settings.epochs)
        self.handle = sadp_core.attach(
            self.model, num_examples=len(self.data.train_y), prune_ratio=spec.prune_ratio,
            epochs=settings.epochs, seed=spec.seed, **attach_options(spec.method), **dict(settings.pruner),
        )  # fmt: skip
        self.sampler = self.handle.batch_sampler(settings.batch_size)

    def _train_steps(self, bar: Callable[[Any, int], Any] | None) -> tuple[int, float, float]:
        model, handle, optimizer = self.model, self.handle, self.optimizer
        x_all, y_all = self.data.train_x, self.data.train_y
        loss_kind = self.settings.loss
        model.train()
        batches = self.sampler if bar is None else bar(self.sampler, len(self.sampler))
        seen = 0
        for batch in batches:
            index = torch.as_tensor(batch)
            losses = per_example_loss(model(x_all[index]), y_all[index], loss_kind)
            loss = handle.weighted_loss(losses, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            reset(model)
            seen += len(batch)
        self.scheduler.step()
        return seen, 0.0, 0.0

    def _evaluate(self, limit: int | None) -> float:
        accuracy: float = evaluate(self.model, self.data, self.settings.eval_batch, limit)
        return accuracy


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, batch_size: int, limit: int | None = None) -> float:
    """Test accuracy (0..1) on the first ``limit`` test examples (all if None); leaves the
    model in training mode with its state reset."""
    model.eval()
    correct = 0
    size = len(data.test_y) if limit is None else min(limit, len(data.test_y))
    for start in range(0, size, batch_size):
        stop = min(start + batch_size, size)
        outputs = model(data.test_x[start:stop])
        correct += int((predict(outputs) == data.test_y[start:stop]).sum())
        reset(model)
    model.train()
    return correct / size
