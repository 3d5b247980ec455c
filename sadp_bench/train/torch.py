"""A training run of a torch network (snnTorch or SpikingJelly) through ``sadp_core.attach``.

Each run trains as a user would: ``h = sadp_core.attach(model, ...)``, then for each epoch
one pass over ``h.batch_sampler(batch_size)``, and the loss of every batch through
``h.weighted_loss(per_example_losses, indices)``; Adam with a cosine schedule.

On a GPU (``Settings.device``, e.g. ``"cuda"``) model and data live on the device; the
batch indices stay on the host for the handle and a copy gathers the batch on the device.
The timed region ends with ``torch.cuda.synchronize()``, and torch's sync debug mode counts
the host-device synchronisations of every step (``cuda_syncs``, ``cuda_sync_steps``: one
number per epoch in the record).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import sadp_core

from ..data import Data
from ..methods import attach_options
from ..models.torch import build_model, per_example_loss, predict, reset
from .common import Run

_SYNC_MESSAGE = "synchroniz"
"""What the warnings of torch's sync debug mode say ("called a synchronizing CUDA operation")."""


@contextmanager
def counting_syncs(active: bool) -> Iterator[list[warnings.WarningMessage]]:
    """While active, torch's CUDA sync debug mode warns at every host-device synchronisation;
    the warnings land in the list yielded (other warnings are passed on when it closes)."""
    if not active:
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for message in caught:
        if not is_sync(message):
            warnings.warn_explicit(message.message, message.category, message.filename, message.lineno)


def is_sync(message: warnings.WarningMessage) -> bool:
    """Whether a recorded warning is one of torch's sync debug mode."""
    return _SYNC_MESSAGE in str(message.message)


@dataclass
class TorchRun(Run):
    """One torch run with its own model, optimizer, schedule and handle."""

    cuda_syncs: list[int] = field(default_factory=list)
    cuda_sync_steps: list[int] = field(default_factory=list)

    def _setup(self) -> None:
        spec, settings = self.spec, self.own_settings
        self.device = torch.device(settings.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {settings.device!r} asked for, but torch sees no CUDA device")
        torch.manual_seed(spec.seed)  # the same initial weights for every method of a comparison
        self.model = build_model(
            spec.framework, spec.model, self.data.side, hidden=settings.hidden, steps=settings.steps
        ).to(self.device)
        self.train_x, self.train_y = self.data.train_x.to(self.device), self.data.train_y.to(self.device)
        self.test_x, self.test_y = self.data.test_x.to(self.device), self.data.test_y.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=settings.epochs)
        self.handle = sadp_core.attach(
            self.model, num_examples=len(self.data.train_y), prune_ratio=spec.prune_ratio,
            epochs=settings.epochs, seed=spec.seed,
            **{**attach_options(spec.method), **dict(settings.pruner)},
        )  # fmt: skip
        self.sampler = self.handle.batch_sampler(settings.batch_size)

    def _train_steps(self, bar: Callable[[Any, int], Any] | None) -> tuple[int, float, float]:
        model, handle, optimizer = self.model, self.handle, self.optimizer
        x_all, y_all, device = self.train_x, self.train_y, self.device
        cuda = device.type == "cuda"
        loss_kind = self.settings.loss
        model.train()
        batches = self.sampler if bar is None else bar(self.sampler, len(self.sampler))
        seen = steps_with_sync = 0
        with counting_syncs(cuda) as caught:
            for batch in batches:
                before = len(caught)
                index = torch.as_tensor(batch)  # on the host, for the handle
                on_device = index.to(device, non_blocking=True) if cuda else index
                losses = per_example_loss(model(x_all[on_device]), y_all[on_device], loss_kind)
                loss = handle.weighted_loss(losses, index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                reset(model)
                seen += len(batch)
                steps_with_sync += any(is_sync(message) for message in caught[before:])
            if cuda:
                torch.cuda.synchronize()  # the epoch's GPU work inside the timer (not counted)
        self.scheduler.step()
        if cuda:
            self.cuda_syncs.append(sum(is_sync(message) for message in caught))
            self.cuda_sync_steps.append(steps_with_sync)
        return seen, 0.0, 0.0

    def _evaluate(self, limit: int | None) -> float:
        test = Data(self.data.name, self.data.side, self.train_x, self.train_y, self.test_x, self.test_y)
        accuracy: float = evaluate(self.model, test, self.settings.eval_batch, limit)
        return accuracy

    def _extra_fields(self) -> dict[str, Any]:
        if self.device.type != "cuda":
            return {"device": str(self.device)}
        return {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device),
            "cuda_syncs": self.cuda_syncs,
            "cuda_sync_steps": self.cuda_sync_steps,
        }


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, batch_size: int, limit: int | None = None) -> float:
    """Test accuracy (0..1) on the first ``limit`` test examples (all if None); leaves the
    model in training mode with its state reset. The test tensors live with the model."""
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
