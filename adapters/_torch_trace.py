"""The trace of the torch handle: the hooks on the tapped layers, and the scores they give.

A :class:`Tap` sits on one Linear or Conv layer. Each call of the layer in a training
forward pass keeps the norm of its input per (time step, example) row and puts a pre-hook
on the autograd node that made the output; when the error reaches the output, the hook
hands the handle a *piece* of trace, ``(batch, layer, input norms, error norms)``.
:func:`bound_sums` turns the pieces of many batches into per-example, per-layer spike-aware
bounds in one vectorised pass; :func:`exact_sums` gives exact Linear gradient norms instead
(``score="exact"``, where pieces hold the raw inputs and errors).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from sadp_core.errors import SADPError, SADPWarning
from sadp_core.scores import exact_readout_score

__all__ = ["FEATURE_DIMS", "TAPPABLE", "Batch", "Piece", "SlotCache", "Tap", "bound_sums", "exact_sums"]

TAPPABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
FEATURE_DIMS = {nn.Linear: 1, nn.Conv1d: 2, nn.Conv2d: 3, nn.Conv3d: 4}


@dataclass
class SlotCache:
    """The slot of every trace row, kept while the layout of the pieces stays the same."""

    key: Any = None
    slots: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    bias_terms: float | torch.Tensor = 1.0


@dataclass
class Batch:
    """The batch whose trace is being recorded: set by ``weighted_loss``."""

    indices: np.ndarray
    weights: np.ndarray  # its plan weights: the captured error is (w_i / B) dL_i/do
    epoch: int
    totals: np.ndarray | None = None  # [B, layers] per-layer scores written so far (truncated BPTT)


Piece = tuple[Batch, int, torch.Tensor, torch.Tensor]  # batch, layer, input norms, error norms


def feature_dims(module: nn.Module) -> int:
    for kind, dims in FEATURE_DIMS.items():
        if isinstance(module, kind):
            return dims
    raise SADPError(f"{type(module).__name__} is not a Linear or Conv layer and cannot be tapped")


class Tap:
    """Forward hook and output-gradient hooks on one Linear or Conv layer.

    Each call of the layer in a training forward pass keeps one small tensor, the norm of
    its input per (time step, example) row, and hooks its output; when the output's
    gradient arrives, the hook hands the handle a *piece* of the trace: those input norms
    with the norms of the error, ``[rows]`` each. Nothing larger is kept (with
    ``score="exact"``, the raw input and error instead). For a convolution the weight
    gradient sums over ``P`` output positions, each input element feeding at most
    ``k = kh * kw`` of them, so ``||[dW, db]|| <= ||e|| sqrt(k ||s||^2 + P)`` per step: the
    bound's form with ``s * sqrt(k / P)`` and ``e * sqrt(P)``, which is what is stored.
    """

    def __init__(self, index: int, name: str, module: nn.Module, handle: Any, keep_tensors: bool) -> None:
        self.index, self.name, self.module, self.handle = index, name, module, handle
        self.keep_tensors = keep_tensors
        self.feature_dims = feature_dims(module)
        # the feature axes of inputs and outputs with 1 or 2 leading (time, example) axes
        self.feature_axes = {lead: tuple(range(lead, lead + self.feature_dims)) for lead in (1, 2)}
        self.kernel_area = math.prod(getattr(module, "kernel_size", (1,)))
        self.bias = getattr(module, "bias", None) is not None
        self.recorded = 0  # calls traced (outside a backward pass)
        self.last_output_id = -1
        self.warned_reentrant = False
        self.hook = module.register_forward_hook(self._forward)

    def _forward(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        # no gradient will come without training mode, grad mode and an output that needs one
        if not (module.training and isinstance(output, torch.Tensor) and output.requires_grad):
            return None
        if torch._C._current_graph_task_id() != -1:  # a checkpoint recomputing inside backward
            self._warn_reentrant()
            return None
        inputs = args[0].detach()
        lead = inputs.ndim - self.feature_dims
        if lead != 1 and lead != 2:
            raise SADPError(
                f"layer {self.name!r} got input of shape {tuple(inputs.shape)}: expected [rows, features] "
                "(single-step, or time and batch flattened time-major) or [T, B, features] (multi-step)"
            )
        positions = 1
        if self.keep_tensors:
            kept = inputs
        else:
            kept = torch.linalg.vector_norm(inputs, dim=self.feature_axes[lead], dtype=torch.float32)
            if self.feature_dims > 1:
                positions = math.prod(output.shape[lead + 1 :])
                kept = kept * math.sqrt(self.kernel_area / positions)
        handle = self.handle
        if handle._received:
            handle._generation += 1  # the first forward after a backward: a new trace
            handle._received = False
        self.recorded += 1
        if output._is_view():
            output = output.clone()  # a hook on a view that is later changed in place would never fire
        if not handle._checks.done:  # what the checks of the first step look at
            handle._checks.executed.append(self.name)
            self.last_output_id = id(output)
        # a pre-hook on the node that made the output: it gets the error at the output
        node = output.grad_fn
        node.register_prehook(
            partial(self._backward, kept, lead, math.sqrt(positions), handle._generation, output.output_nr)
        )
        return output

    def _warn_reentrant(self) -> None:
        if not self.recorded and not self.warned_reentrant:
            self.warned_reentrant = True
            warnings.warn(
                f"layer {self.name!r} runs only inside backward (a checkpoint with use_reentrant=True): "
                "its trace cannot be recorded and its scores stay unset; use use_reentrant=False",
                SADPWarning,
                stacklevel=3,
            )

    def _backward(
        self,
        kept: torch.Tensor,
        lead: int,
        scale: float,
        generation: int,
        output_nr: int,
        grads: tuple[torch.Tensor | None, ...],
    ) -> None:
        handle, grad = self.handle, grads[output_nr]
        if grad is None or generation < handle._batch_generation:
            return  # no error reached this output, or the graph of an earlier batch ran again
        batch = handle._start_piece()
        size = batch.indices.shape[0]
        if (grad.shape[1] != size) if lead == 2 else (grad.shape[0] % size):
            raise SADPError(
                f"layer {self.name!r} got output of shape {tuple(grad.shape)} for a batch of {size}: "
                "inputs must be [T, B, ...] or [T*B, ...] time-major, and h.weighted_loss must get "
                "this batch's indices"
            )
        if self.keep_tensors:
            errors = grad.detach()
        else:
            errors = torch.linalg.vector_norm(grad, dim=self.feature_axes[lead], dtype=torch.float32)
            if scale != 1.0:
                errors = errors * scale
        handle._pieces.append((batch, self.index, kept, errors))


def bound_sums(
    pieces: list[Piece], batches: list[Batch], taps: list[Tap], cache: SlotCache
) -> list[np.ndarray]:
    """Per batch, ``[B, layers]`` bounds: every piece's rows at once, summed by example.

    Row ``r`` of a piece (time-major ``[T*B]``) belongs to example ``r % B`` of its batch;
    each (batch, example, layer) has a slot, and one ``index_add`` sums the rows' terms.
    """
    layers = len(taps)
    sizes = [batch.indices.shape[0] for batch in batches]
    ordinal = {id(batch): number for number, batch in enumerate(batches)}
    # (rows, batch number, layer) of every piece: the same from one group of batches to
    # the next in a steady training loop, so the slot of every row is computed once
    layout = tuple((error.numel(), ordinal[id(batch)], layer) for batch, layer, _, error in pieces)
    key = (layout, tuple(sizes), layers)
    if cache.key != key:
        cache.key = key
        cache.slots, cache.bias_terms = _slot_index(layout, sizes, [tap.bias for tap in taps])
    spikes = torch.cat([kept if kept.ndim == 1 else kept.reshape(-1) for _, _, kept, _ in pieces])
    errors = torch.cat([error if error.ndim == 1 else error.reshape(-1) for _, _, _, error in pieces])
    spikes, errors = spikes.cpu(), errors.cpu()
    spikes.square_().add_(cache.bias_terms).sqrt_()  # the terms ||e_t|| sqrt(||s_t||^2 + bias), in place
    sums = torch.zeros(sum(sizes) * layers, dtype=torch.float32)
    sums.index_add_(0, cache.slots, errors.mul_(spikes))
    table = sums.numpy().astype(np.float64).reshape(-1, layers)
    starts = np.cumsum(sizes) - sizes
    return [table[start : start + size] for start, size in zip(starts, sizes, strict=True)]


def _slot_index(
    layout: tuple[tuple[int, int, int], ...], sizes: list[int], bias_of_layer: list[bool]
) -> tuple[torch.Tensor, float | torch.Tensor]:
    """The slot of every row of the pieces, and the bias term of every row: 1 or 0 for
    all rows alike, else one per row."""
    layers = len(bias_of_layer)
    rows, batch, layer = (np.array(column, dtype=np.int64) for column in zip(*layout, strict=True))
    piece_of_row = np.repeat(np.arange(len(layout)), rows)
    size = np.array(sizes, dtype=np.int64)
    first = (np.cumsum(size) - size)[batch]
    row_in_piece = np.arange(rows.sum()) - (np.cumsum(rows) - rows)[piece_of_row]
    slots = (first[piece_of_row] + row_in_piece % size[batch][piece_of_row]) * layers + layer[piece_of_row]
    bias = np.array(bias_of_layer, dtype=np.float32)
    if bias.min() == bias.max():
        return torch.from_numpy(slots), float(bias[0])
    return torch.from_numpy(slots), torch.from_numpy(bias[layer[piece_of_row]])


def exact_sums(pieces: list[Piece], batches: list[Batch], taps: list[Tap]) -> list[np.ndarray]:
    """Per batch, ``[B, layers]`` exact gradient norms of its tapped Linear layers."""
    result = []
    for batch in batches:
        size, columns = batch.indices.shape[0], []
        for tap in taps:
            mine = [(kept, error) for b, layer, kept, error in pieces if b is batch and layer == tap.index]
            if not mine:
                columns.append(np.zeros(size))
                continue
            spikes = time_major([kept for kept, _ in mine], size)
            errors = time_major([error for _, error in mine], size)
            score = exact_readout_score(spikes, errors, bias=tap.bias)
            columns.append(score.detach().double().cpu().numpy())
        result.append(np.stack(columns, axis=1))
    return result


def time_major(pieces: list[torch.Tensor], batch: int) -> torch.Tensor:
    """A Linear layer's inputs or errors, ``[T*B, F]`` or ``[T, B, F]`` each -> ``[T', B, F]``."""
    steps = [piece.reshape(-1, batch, piece.shape[-1]).float() for piece in pieces]
    return steps[0] if len(steps) == 1 else torch.cat(steps)
