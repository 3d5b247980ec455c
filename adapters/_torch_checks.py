"""What the torch handle checks: which layer is the readout, the first step, and that every
batch named by ``weighted_loss`` got its trace.

- :func:`candidates` and :func:`choose_readout` find the readout (or check the one named);
- :class:`Checks` and :func:`warn_if_normalises_tap` hold the one-off checks of the first
  training step (is the readout the last layer run? does a training-mode BatchNorm mix the
  examples of a tapped output?);
- :class:`Delivery` reports the batches whose backward pass brought no trace: with an
  :class:`~sadp_core.SADPWarning` naming the likely cause, once per cause, and a count that
  the handle's ``stats`` shows as ``unscored_batches``.

A gradient flows wherever grad mode is on and a tensor needs one; a module's ``training``
flag says nothing about it (eval-mode training, with BatchNorm and dropout frozen, is
training), so nothing here looks at it except where BatchNorm's own behaviour depends on it.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol, cast

from torch import nn

from sadp_core.errors import SADPError, SADPWarning

from ._torch_trace import TAPPABLE, Batch, Tap

__all__ = ["Checks", "Delivery", "Framework", "candidates", "choose_readout", "warn_if_normalises_tap"]

_HERE = os.path.dirname(os.path.abspath(__file__))


class Framework(Protocol):
    """What the checks need of a framework description (``TorchFramework`` is one)."""

    @property
    def name(self) -> str:
        """Shown in messages."""

    @property
    def is_internal(self) -> Callable[[nn.Module, str, nn.Module], bool]:
        """``(parent, attribute, child) -> bool``: the child belongs to a neuron's dynamics."""


@dataclass
class Checks:
    """One-off checks made on the first recorded training step."""

    executed: list[str] = field(default_factory=list)  # tappable layers, in the order they ran
    hooks: list[Any] = field(default_factory=list)  # removed once the checks are made
    done: bool = False


# -- batches that got no trace ------------------------------------------------------------------

_UNSCORED = "so its {size} examples keep their earlier scores (see h.stats.unscored_batches; reported once)"

_CAUSES = {
    "no_backward": (
        "a batch named by h.weighted_loss got no backward pass before the next batch was named, "
        + _UNSCORED
        + ". Call backward() on the loss that h.weighted_loss returns (or on a sum that contains it) "
        "for every batch you name, outside torch.no_grad(); name only the batches you train on"
    ),
    "frozen": (
        "the backward pass of a batch named by h.weighted_loss did not reach {layers}, whose "
        "parameters have requires_grad=False: when nothing before it needs a gradient either, no "
        "error reaches it, "
        + _UNSCORED
        + ". Unfreeze it (requires_grad_(True)) or attach with readout= a layer that the error "
        "reaches (if the loss does not pass through it at all, compute the losses from its output)"
    ),
    "not_run": (
        "the backward pass of a batch named by h.weighted_loss did not reach {layers}, which did not "
        "run in a forward pass with gradients since the backward pass before, "
        + _UNSCORED
        + ". Compute the losses from the output of a forward pass through it (not under "
        "torch.no_grad()), or attach with readout= the layer that makes the model's output"
    ),
    "not_through": (
        "the loss of a batch named by h.weighted_loss does not pass through {layers}: its backward "
        "pass reached other layers but not that one's output (a loss on another output, or on a "
        "detached one), "
        + _UNSCORED
        + ". Compute the per-example losses from the readout's output (add other terms to them), "
        "or attach with readout= the layer the loss passes through"
    ),
}


class Delivery:
    """Counts and reports the named batches whose backward pass brought no trace.

    The handle asks :meth:`check` when the next batch is named, and when the score table is
    read; a batch is reported once, and each cause (:data:`_CAUSES`) is warned about once.
    """

    def __init__(self) -> None:
        self.unscored = 0  # batches reported
        self.warned: set[str] = set()

    def check(self, batch: Batch, taps: list[Tap], naming: Batch | None) -> None:
        """Report ``batch``, which no backward pass has reached a tap for since it was named,
        if it is final: its backward pass ran (the loss was reached), or the next batch is
        being named (``naming``, then not the same examples named again, as when two losses
        of one batch each go through ``weighted_loss``)."""
        if batch.reported or not taps:
            return
        if not batch.reached:
            if naming is None or _same_examples(batch, naming):
                return  # the backward pass may still come
            cause = "no_backward"
        elif all(not p.requires_grad for tap in taps for p in tap.module.parameters()):
            cause = "frozen"
        elif not batch.ran:
            cause = "not_run"
        else:
            cause = "not_through"
        batch.reported = True
        self.unscored += 1
        if cause in self.warned:
            return
        self.warned.add(cause)
        names = ", ".join(repr(tap.name) for tap in taps)
        layers = f"the readout {names}" if len(taps) == 1 else f"any of the tapped layers {names}"
        message = _CAUSES[cause].format(layers=layers, size=batch.indices.shape[0])
        warnings.warn(message, SADPWarning, stacklevel=_outside_stacklevel())


def _same_examples(batch: Batch, other: Batch) -> bool:
    return (
        batch.epoch == other.epoch
        and batch.indices.shape == other.indices.shape
        and bool((batch.indices == other.indices).all())
    )


def _outside_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside the adapters (the user's line)."""
    level, frame = 1, cast("FrameType | None", sys._getframe(1))
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _HERE:
        level, frame = level + 1, frame.f_back
    return level


# -- the readout and the first step --------------------------------------------------------------


def warn_if_normalises_tap(module: nn.Module, args: tuple[Any, ...], name: str, taps: list[Tap]) -> None:
    """Warn if the training-mode BatchNorm ``module`` normalises a tapped layer's output."""
    if module.training and args and any(id(args[0]) == tap.last_output_id for tap in taps):
        warnings.warn(
            f"BatchNorm {name!r} normalises the output of a tapped layer in training mode, which mixes "
            "examples: per-example scores are then approximate. Put it in eval mode, or tap another layer",
            SADPWarning,
            stacklevel=2,
        )


def candidates(model: nn.Module, framework: Framework) -> list[tuple[str, nn.Module]]:
    """Linear and Conv layers in definition order, without those internal to a neuron."""
    internal = set()
    for parent_name, parent in model.named_modules():
        for attribute, child in parent.named_children():
            if isinstance(child, TAPPABLE) and framework.is_internal(parent, attribute, child):
                internal.add(f"{parent_name}.{attribute}" if parent_name else attribute)
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, TAPPABLE) and name not in internal
    ]


def choose_readout(
    model: nn.Module,
    found: list[tuple[str, nn.Module]],
    readout: str | nn.Module | None,
    framework: Framework,
) -> str:
    """The name of the readout: the last of the ``found`` candidates, or the one named."""
    names = [name for name, _ in found]
    if readout is None:
        if not found:
            raise SADPError(
                f"no Linear or Conv layer outside the {framework.name} neurons: nothing to use as the readout"
            )
        return names[-1]
    if isinstance(readout, nn.Module):
        for name, module in model.named_modules():
            if module is readout:
                readout = name
                break
        else:
            raise SADPError("readout= is a module that is not part of the model")
    if not isinstance(readout, str) or readout not in names:
        raise SADPError(
            f"readout={readout!r} is not a Linear or Conv layer of the model; choose one of {names}"
        )
    return readout
