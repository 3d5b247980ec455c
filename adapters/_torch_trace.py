"""The trace of the torch handle: the taps on the traced layers, and the scores they give.

A :class:`Tap` sits on one Linear or Conv layer. Each call of the layer in a forward pass
with gradients (grad mode on, whatever the modules' ``training`` flags) leaves, once the
error reaches its output, a *piece* of trace: ``(batch, layer, input norms, error norms)``.
A plain Linear layer is traced by a class swap (its forward becomes :class:`_TracedLinear`,
whose backward takes both norms); any other layer by a forward hook and a pre-hook on the
autograd node of its output.
:func:`bound_sums` turns the pieces of many batches into per-example, per-layer
spike-aware bounds in one vectorised pass; :func:`exact_sums` gives exact Linear gradient
norms instead (``score="exact"``, where pieces hold the raw inputs and errors).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sadp_core.errors import SADPError, SADPWarning
from sadp_core.scores import exact_readout_score

__all__ = [
    "FEATURE_DIMS",
    "TAPPABLE",
    "Batch",
    "Piece",
    "SlotCache",
    "Tap",
    "bound_sums",
    "exact_sums",
    "is_traced",
]

_ROWS_HINT = (
    "inputs must be [T, B, ...] or [T*B, ...] time-major, and h.weighted_loss must get this batch's indices"
)

TAPPABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
FEATURE_DIMS = {nn.Linear: 1, nn.Conv1d: 2, nn.Conv2d: 3, nn.Conv3d: 4}


@dataclass
class SlotCache:
    """The slot of every trace row, kept while the layout of the pieces stays the same."""

    key: Any = None
    slots: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    bias_terms: float | torch.Tensor = 1.0


@dataclass(slots=True)
class Batch:
    """A batch named by ``weighted_loss``: the trace recorded next belongs to it."""

    indices: torch.Tensor  # [B] integers on the CPU
    weights: torch.Tensor  # [B] its plan weights: the captured error is (w_i / B) dL_i/do
    epoch: int
    since: int  # the oldest trace that is this batch's: the same examples named again (truncated BPTT)
    reached: bool = False  # a backward pass reached the loss that weighted_loss returned
    ran: bool = False  # a tap ran with gradients between the backward pass before and that one
    reported: bool = False  # reported as unscored (see _torch_checks.Delivery)
    # the gradient that reached the loss weighted_loss returned: 1 for loss.backward(), the
    # scale for GradScaler's scaler.scale(loss).backward(), 1/k for (loss / k).backward()
    seed: torch.Tensor | None = None


Piece = tuple[Batch, int, torch.Tensor, torch.Tensor]  # batch, layer, input norms, error norms


def feature_dims(module: nn.Module) -> int:
    for kind, dims in FEATURE_DIMS.items():
        if isinstance(module, kind):
            return dims
    raise SADPError(f"{type(module).__name__} is not a Linear or Conv layer and cannot be tapped")


class Tap:
    """The trace of one Linear or Conv layer.

    Each call of the layer in a forward pass with gradients leaves, once the error reaches its
    output, a *piece* of the trace: the norm of the layer's input and the norm of the error
    at its output per (time step, example) row, ``[rows]`` each. Nothing larger is kept
    (with ``score="exact"``, the raw input and error instead).

    A plain Linear layer is traced by swapping its class for a subclass whose forward is
    :class:`_TracedLinear`, an ``autograd.Function`` that computes the layer itself and
    takes both norms in its backward: no hook, and the input is the one autograd keeps for
    the weight gradient anyway. Any other layer (a Conv, a Linear subclass with its own
    forward), and any call under ``torch.compile``, is traced by a forward hook that keeps
    the input norm and puts a pre-hook on the autograd node that made the output.

    For a convolution the weight gradient sums over ``P`` output positions, each input
    element feeding at most ``k = kh * kw`` of them, so ``||[dW, db]|| <= ||e|| sqrt(k ||s||^2 + P)``
    per step: the bound's form with ``s * sqrt(k / P)`` and ``e * sqrt(P)``, which is what is
    stored.
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
        self.original_class: type[nn.Module] | None = None
        self.hook: Any = None
        if type(module).forward is nn.Linear.forward:  # a plain Linear: its class is swapped
            self.original_class = type(module)
            module.__class__ = _traced_class(self, type(module))
        else:
            self.hook = module.register_forward_hook(self._forward)

    def remove(self) -> None:
        """Stop tracing: the layer's class and hooks are as before."""
        if self.hook is not None:
            self.hook.remove()
            self.hook = None
        if self.original_class is not None:
            self.module.__class__ = self.original_class
            self.original_class = None

    # -- a plain Linear: the traced class --------------------------------------------------

    def linear(self, module: nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
        """The forward of a traced Linear layer, where the hot path in its class does not apply:
        grad mode off, the first step (its checks), autocast, checkpoints, ``torch.compile``.

        Whether a gradient will come is grad mode's to say (and ``requires_grad``'s), not the
        module's ``training`` flag: eval-mode training is traced like training mode."""
        weight: torch.Tensor = module.weight
        bias: torch.Tensor | None = module.bias
        if not _grad_enabled():
            return F.linear(inputs, weight, bias)  # no_grad() or inference_mode(): no gradient will come
        if torch.compiler.is_compiling() or _functorch_active():  # a backward with side effects: hooks
            output = F.linear(inputs, weight, bias)
            hooked = self._forward(module, (inputs,), output)
            return output if hooked is None else hooked
        if inputs.ndim != 2 and inputs.ndim != 3:
            raise self._shape_error(inputs)
        if _any_autocast():
            inputs, weight, bias = _autocast(inputs, weight, bias)
        if _graph_task() != -1:  # a checkpoint recomputing inside backward
            self._warn_reentrant()
            return _apply_traced(inputs, weight, bias, None, 0)  # the same saved tensors, no trace
        traced = _apply_traced(inputs, weight, bias, self, self._note_call())
        if not self.handle._checks.done:
            self.last_output_id = id(traced)
        return traced

    # -- any other layer: the hooks --------------------------------------------------------

    def _forward(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        # no gradient will come without grad mode and an output that needs one (the module's
        # training flag says nothing about it: eval-mode training is training)
        if not (isinstance(output, torch.Tensor) and output.requires_grad):
            return None
        if torch._C._current_graph_task_id() != -1:  # a checkpoint recomputing inside backward
            self._warn_reentrant()
            return None
        inputs = args[0].detach()
        lead = inputs.ndim - self.feature_dims
        if lead != 1 and lead != 2:
            raise self._shape_error(inputs)
        positions = 1
        if self.keep_tensors:
            kept = inputs
        else:
            kept = _row_norms(inputs, self.feature_axes[lead])
            if self.feature_dims > 1:
                positions = math.prod(output.shape[lead + 1 :])
                kept = kept * math.sqrt(self.kernel_area / positions)
        generation = self._note_call()
        if output._is_view():
            output = output.clone()  # a hook on a view that is later changed in place would never fire
        if not self.handle._checks.done:
            self.last_output_id = id(output)
        # a pre-hook on the node that made the output: it gets the error at the output
        node = output.grad_fn
        node.register_prehook(
            partial(self._backward, kept, lead, math.sqrt(positions), generation, output.output_nr)
        )
        return output

    def _backward(
        self,
        kept: torch.Tensor,
        lead: int,
        scale: float,
        generation: int,
        output_nr: int,
        grads: tuple[torch.Tensor | None, ...],
    ) -> None:
        grad = grads[output_nr]
        if grad is not None:  # else no error reached this output
            self.receive(kept, grad, lead, scale, generation)

    # -- both ------------------------------------------------------------------------------

    def _note_call(self) -> int:
        """A call in a forward pass with gradients: the number of the trace it belongs to."""
        handle = self.handle
        handle._ran = True
        if handle._received:
            handle._generation += 1  # the first forward after a backward: a new trace
            handle._received = False
        self.recorded += 1
        if not handle._checks.done:  # what the checks of the first step look at
            handle._checks.executed.append(self.name)
        generation: int = handle._generation
        return generation

    def receive(
        self, kept: torch.Tensor, grad: torch.Tensor, lead: int, scale: float, generation: int
    ) -> None:
        """The error reached the output of a traced call: hand the handle its piece.

        ``kept`` is the input norms, or the input itself where the tap takes its norm only
        now (a traced Linear) or keeps it (``score="exact"``).
        """
        handle = self.handle
        if generation < handle._batch_generation and not handle._continues(generation):
            return  # the graph of an earlier batch ran again
        if _graph_task() != handle._pass:
            handle._start_pass()
        batch = handle._batch
        size = batch.indices.shape[0]
        if lead == 1:
            wrong = grad.shape[0] % size
        elif lead == 2:
            wrong = grad.shape[1] != size
        else:
            raise self._shape_error(kept)
        if wrong:
            raise SADPError(
                f"layer {self.name!r} got output of shape {tuple(grad.shape)} for a batch of {size}: "
                + _ROWS_HINT
            )
        kept, grad = kept.detach(), grad.detach()  # (a backward with create_graph=True)
        if self.keep_tensors:
            errors = grad
        else:
            if kept.ndim > lead:
                kept = _row_norms(kept, (-1,))
            errors = _row_norms(grad, self.feature_axes[lead])
            if scale != 1.0:
                errors = errors * scale
        handle._pieces.append((batch, self.index, kept, errors))

    def _shape_error(self, inputs: torch.Tensor) -> SADPError:
        return SADPError(
            f"layer {self.name!r} got input of shape {tuple(inputs.shape)}: expected [rows, features] "
            "(single-step, or time and batch flattened time-major) or [T, B, features] (multi-step)"
        )

    def _warn_reentrant(self) -> None:
        if not self.recorded and not self.warned_reentrant:
            self.warned_reentrant = True
            warnings.warn(
                f"layer {self.name!r} runs only inside backward (a checkpoint with use_reentrant=True): "
                "its trace cannot be recorded and its scores stay unset; use use_reentrant=False",
                SADPWarning,
                stacklevel=4,
            )


_any_autocast = torch._C._is_any_autocast_enabled
_grad_enabled = torch._C.is_grad_enabled
_graph_task = torch._C._current_graph_task_id  # -1 outside a backward pass
_functorch_active = torch._C._are_functorch_transforms_active
_vector_norm = torch.linalg.vector_norm


class _TracedLinear(torch.autograd.Function):
    """``F.linear`` whose backward also hands ``tap`` the trace of the call (if not None)."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        tap: Tap | None,
        generation: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.tap, ctx.generation = tap, generation
        return F.linear(inputs, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs, weight = ctx.saved_tensors
        needs_input, needs_weight, needs_bias, _, _ = ctx.needs_input_grad
        rows = grad.reshape(-1, grad.shape[-1])  # [T, B, features] as [T*B, features]
        grad_input = grad.matmul(weight) if needs_input else None
        grad_weight = rows.t().mm(inputs.reshape(-1, inputs.shape[-1])) if needs_weight else None
        grad_bias = rows.sum(0) if needs_bias else None
        if ctx.tap is not None:
            ctx.tap.receive(inputs, grad, grad.ndim - 1, 1.0, ctx.generation)
        return grad_input, grad_weight, grad_bias, None, None


class _LeanTracedLinear(torch.autograd.Function):
    """:class:`_TracedLinear` for the common case, kept lean as it runs on every call: a
    float32 ``[rows, features]`` input that needs a gradient, a bias, the bound score."""

    @staticmethod
    def forward(
        ctx: Any, inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, tap: Tap
    ) -> torch.Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.tap, ctx.generation = tap, tap.handle._generation
        return F.linear(inputs, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs, weight = ctx.saved_tensors
        tap = ctx.tap
        handle = tap.handle
        if (
            ctx.generation >= handle._batch_generation
            and _graph_task() == handle._pass
            and not grad.requires_grad  # (create_graph=True: see receive)
        ):
            handle._pieces.append(
                (handle._batch, tap.index, _vector_norm(inputs, dim=-1), _vector_norm(grad, dim=-1))
            )
        else:  # the first call of a pass (its checks), an earlier graph, an error
            tap.receive(inputs, grad, 1, 1.0, ctx.generation)
        return grad.mm(weight), grad.t().mm(inputs), grad.sum(0), None


# Function.apply without its functorch handling (no transform is active where it is called)
_apply_traced = cast("Callable[..., torch.Tensor]", super(torch.autograd.Function, _TracedLinear).apply)
_apply_lean = cast("Callable[..., torch.Tensor]", super(torch.autograd.Function, _LeanTracedLinear).apply)


def _row_norms(tensor: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """The float32 norms of ``tensor`` over ``axes``: half precision is summed in float32,
    float64 (a model cast with ``.double()``, before or after ``attach``) in float64."""
    norms: torch.Tensor
    if tensor.dtype is torch.float32:
        norms = torch.linalg.vector_norm(tensor, dim=axes)
    elif tensor.dtype is torch.float64:
        norms = torch.linalg.vector_norm(tensor, dim=axes).float()
    else:
        norms = torch.linalg.vector_norm(tensor, dim=axes, dtype=torch.float32)
    return norms


def _autocast(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The operands of a Linear layer cast as autocast casts them, if it is on for their device."""
    device = inputs.device.type
    if not torch.is_autocast_enabled(device):
        return inputs, weight, bias
    dtype = torch.get_autocast_dtype(device)
    return inputs.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def is_traced(module: nn.Module) -> bool:
    """Whether ``module``'s class is a traced subclass made by a tap (see :class:`Tap`)."""
    return bool(getattr(type(module), "_sadp_traced", False))


def _traced_class(tap: Tap, original: type[nn.Module]) -> type[nn.Module]:
    """A subclass of ``original`` whose forward is traced by ``tap``.

    It has the original's name, and pickles (``torch.save``, ``copy.deepcopy``) as the
    original class: a copy of an attached model is a plain model.
    """

    handle = tap.handle
    lean = tap.bias and not tap.keep_tensors  # see _LeanTracedLinear

    def forward(self: nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
        # the hot path of every call, kept lean: a step with gradients once the first one is checked
        if (
            _grad_enabled()
            and handle._checks.done
            and not _any_autocast()
            and _graph_task() == -1
            and not _functorch_active()
        ):
            if handle._received:  # the first call after a backward pass: a new trace
                handle._generation += 1
                handle._received = False
            handle._ran = True
            if lean and inputs.ndim == 2 and inputs.dtype is torch.float32 and inputs.requires_grad:
                return _apply_lean(inputs, self.weight, self.bias, tap)
            return _apply_traced(inputs, self.weight, self.bias, tap, handle._generation)
        return tap.linear(self, inputs)

    def __reduce_ex__(self: nn.Module, protocol: Any) -> Any:
        # as the original class would reduce, made by object.__new__ (pickle refuses a
        # copyreg.__newobj__ of a class other than the object's), so loading needs no sadp_core
        _, arguments, *rest = cast(tuple[Any, ...], object.__reduce_ex__(self, max(2, protocol)))
        return (object.__new__, (original, *arguments[1:]), *rest)

    namespace = {
        "_sadp_traced": True,
        "forward": forward,
        "__reduce_ex__": __reduce_ex__,
        "__module__": original.__module__,
        "__qualname__": original.__qualname__,
    }
    traced: type[nn.Module] = type(original.__name__, (original,), namespace)
    return traced


def bound_sums(pieces: list[Piece], batches: list[Batch], taps: list[Tap], cache: SlotCache) -> np.ndarray:
    """The ``[B, layers]`` bounds of the batches, one after another: every piece's rows at
    once, summed by example.

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
    return sums.numpy().astype(np.float64).reshape(-1, layers)


def _slot_index(
    layout: tuple[tuple[int, int, int], ...], sizes: list[int], bias_of_layer: list[bool]
) -> tuple[torch.Tensor, float | torch.Tensor]:
    """The slot of every row of the pieces, and the bias term of every row: 1 or 0 for
    all rows alike, else one per row."""
    layers = len(bias_of_layer)
    rows, batch, layer = (np.array(column, dtype=np.int64) for column in zip(*layout, strict=True))
    piece_of_row = np.repeat(np.arange(len(layout)), rows)
    size = np.array(sizes, dtype=np.int64)
    leftover = rows % size[batch]
    if leftover.any():  # (the first call of each pass is checked as it comes)
        wrong = int(np.flatnonzero(leftover)[0])
        raise SADPError(
            f"a traced layer gave {rows[wrong]} rows of trace for a batch of {size[batch[wrong]]}: "
            + _ROWS_HINT
        )
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
