"""The PyTorch side of ``attach``: trace capture, data plumbing, and the handle.

Shared by the SpikingJelly and snnTorch adapters, which only say what a spiking layer is
in their framework (:class:`TorchFramework`). The handle is a :class:`sadp_core.Pruner`
that also:

- taps the readout (or, with ``scope="all"``, every Linear and Conv layer): a forward hook
  keeps the per-step norm of the layer's input, and a tensor hook on the (cloned) output
  keeps the per-step norm of the error reaching it; nothing larger than ``[T, B]`` is kept;
- when the backward pass ends (an autograd callback), turns these norms into each
  example's spike-aware score, undoes the loss weight and batch mean, and calls
  :meth:`~sadp_core.Pruner.update`, so the scores are in place when ``backward()`` returns;
- feeds a ``DataLoader``: :meth:`TorchHandle.indexed` wraps the dataset so items carry
  their index, :meth:`TorchHandle.batch_sampler` plans the next epoch at each pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from sadp_core.errors import SADPError, SADPWarning
from sadp_core.pruner import Plan, Pruner, PrunerStats
from sadp_core.scores import bound_from_norms, exact_readout_score

__all__ = ["IndexedDataset", "PlanBatchSampler", "TorchFramework", "TorchHandle"]

_TAPPABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_RECORD_EVERY = 64  # backward passes whose scores wait, as small tensors, for one write
_FEATURE_DIMS = {nn.Linear: 1, nn.Conv1d: 2, nn.Conv2d: 3, nn.Conv3d: 4}


@dataclass(frozen=True)
class TorchFramework:
    """What the torch adapter needs to know about one SNN framework.

    Attributes:
        name: shown in messages ("snnTorch", "SpikingJelly").
        neuron_types: classes of the framework's spiking layers.
        is_internal: ``(parent, attribute, child) -> bool``: the child layer belongs to the
            neuron's own dynamics (snnTorch's ``RLeaky.recurrent``) and is never a readout.
    """

    name: str
    neuron_types: tuple[type, ...]
    is_internal: Callable[[nn.Module, str, nn.Module], bool] = lambda parent, attribute, child: False


def _feature_dims(module: nn.Module) -> int:
    for kind, dims in _FEATURE_DIMS.items():
        if isinstance(module, kind):
            return dims
    raise SADPError(f"{type(module).__name__} is not a Linear or Conv layer and cannot be tapped")


class _Tap:
    """Forward hook and output-gradient hooks on one Linear or Conv layer.

    Per call it keeps two small tensors: the norm of the input and of the error at the
    output, for every (time step, example) row. For a convolution the weight gradient sums
    over ``P`` output positions, each input element feeding at most ``k = kh * kw`` of them,
    so ``||[dW, db]|| <= ||e|| sqrt(k ||s||^2 + P)`` per step: the bound's form with
    ``s * sqrt(k / P)`` and ``e * sqrt(P)``, which is what is stored.
    """

    def __init__(self, name: str, module: nn.Module, handle: TorchHandle, keep_tensors: bool) -> None:
        self.name, self.module, self.handle, self.keep_tensors = name, module, handle, keep_tensors
        self.feature_dims = _feature_dims(module)
        # the feature axes of inputs and outputs with 1 or 2 leading (time, example) axes
        self.feature_axes = {lead: tuple(range(lead, lead + self.feature_dims)) for lead in (1, 2)}
        self.kernel_area = math.prod(getattr(module, "kernel_size", (1,)))
        self.bias = getattr(module, "bias", None) is not None
        self.spikes: dict[int, torch.Tensor] = {}  # call -> input norms [rows] or [T, B]
        self.errors: dict[int, torch.Tensor] = {}  # call -> error norms of this backward pass
        self.leads: dict[int, int] = {}  # call -> 1 for [rows, ...] inputs, 2 for [T, B, ...]
        self.generations: dict[int, int] = {}  # call -> trace it belongs to (see drop_before)
        self.raw_inputs: dict[int, torch.Tensor] = {}  # score="exact" only
        self.raw_errors: dict[int, torch.Tensor] = {}
        self.calls = 0
        self.last_output_id = -1
        self.warned_reentrant = False
        self.hook = module.register_forward_hook(self._forward)

    def _forward(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if not (module.training and torch.is_grad_enabled() and isinstance(output, torch.Tensor)):
            return None
        if not output.requires_grad:
            return None  # no gradient will come
        if torch._C._current_graph_task_id() != -1:  # a checkpoint recomputing inside backward
            if not self.spikes and not self.warned_reentrant:
                self.warned_reentrant = True
                warnings.warn(
                    f"layer {self.name!r} runs only inside backward (a checkpoint with use_reentrant=True): "
                    "its trace cannot be recorded and its scores stay unset; use use_reentrant=False",
                    SADPWarning,
                    stacklevel=2,
                )
            return None
        inputs = args[0].detach()
        lead = inputs.ndim - self.feature_dims
        if lead not in (1, 2):
            raise SADPError(
                f"layer {self.name!r} got input of shape {tuple(inputs.shape)}: expected [rows, features] "
                "(single-step, or time and batch flattened time-major) or [T, B, features] (multi-step)"
            )
        norms = torch.linalg.vector_norm(inputs, dim=self.feature_axes[lead], dtype=torch.float32)
        positions = 1
        if self.feature_dims > 1:
            positions = math.prod(output.shape[lead + 1 :])
            norms = norms * math.sqrt(self.kernel_area / positions)
        generation = self.handle._note_forward(self.name)
        call = self.calls
        self.calls += 1
        self.spikes[call], self.leads[call], self.generations[call] = norms, lead, generation
        if self.keep_tensors:
            self.raw_inputs[call] = inputs
        if output._is_view():
            output = output.clone()  # a hook on a view that is later changed in place would never fire
        output.register_hook(partial(self._backward, call, lead, math.sqrt(positions)))
        self.last_output_id = id(output)
        return output

    def _backward(self, call: int, lead: int, scale: float, grad: torch.Tensor) -> None:
        if call not in self.spikes:
            return  # the graph of a batch whose records were dropped
        norms = torch.linalg.vector_norm(grad, dim=self.feature_axes[lead], dtype=torch.float32)
        if scale != 1.0:
            norms = norms * scale
        self.errors[call] = self.errors[call] + norms if call in self.errors else norms
        if self.keep_tensors:
            self.raw_errors[call] = (
                self.raw_errors[call] + grad.detach() if call in self.raw_errors else grad.detach()
            )
        self.handle._note_backward()

    def clear_errors(self) -> None:
        self.errors.clear()
        self.raw_errors.clear()

    def drop_before(self, generation: int) -> None:
        for call in [c for c, g in self.generations.items() if g < generation]:
            for records in (
                self.spikes,
                self.errors,
                self.leads,
                self.generations,
                self.raw_inputs,
                self.raw_errors,
            ):
                records.pop(call, None)

    def bound(self, batch: int) -> torch.Tensor | None:
        """``[B]`` bound of the weight gradient of this backward pass (calls that got a gradient)."""
        calls = sorted(self.errors)
        if not calls:
            return None
        leads = [self.leads[c] for c in calls]
        spikes = _time_major([self.spikes[c] for c in calls], leads, batch, self.name)
        errors = _time_major([self.errors[c] for c in calls], leads, batch, self.name)
        return bound_from_norms(spikes, errors, self.bias, torch)

    def exact(self, batch: int) -> torch.Tensor | None:
        """``[B]`` exact norm of this Linear layer's weight gradient of this backward pass."""
        calls = sorted(self.raw_errors)
        if not calls:
            return None
        leads = [self.leads[c] for c in calls]
        spikes = _time_major([self.raw_inputs[c].float() for c in calls], leads, batch, self.name)
        errors = _time_major([self.raw_errors[c].float() for c in calls], leads, batch, self.name)
        return exact_readout_score(spikes, errors, bias=self.bias)


def _time_major(pieces: list[torch.Tensor], leads: list[int], batch: int, layer: str) -> torch.Tensor:
    """A layer's calls -> ``[T, B, ...]``: each call's leading axes are (time, example) rows."""
    rows = []
    for piece, lead in zip(pieces, leads, strict=True):
        if lead == 2 and piece.shape[1] != batch:
            raise SADPError(
                f"layer {layer!r} got a multi-step input with {piece.shape[1]} examples on axis 1 for a "
                f"batch of {batch}: inputs must be time-major [T, B, ...]"
            )
        rows.append(piece.flatten(0, 1) if lead == 2 else piece)
    flat = rows[0] if len(rows) == 1 else torch.cat(rows)
    if flat.shape[0] % batch:
        raise SADPError(
            f"layer {layer!r} saw {flat.shape[0]} rows for a batch of {batch}: its inputs must be "
            "[T, B, ...] or [T*B, ...] time-major, and h.weighted_loss must get this batch's indices"
        )
    return flat.reshape(flat.shape[0] // batch, batch, *flat.shape[1:])


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
    """

    def __init__(self, handle: TorchHandle, batch_size: int, drop_last: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SADPError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.handle, self.batch_size, self.drop_last = handle, batch_size, drop_last

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.handle._begin_epoch()
        indices = plan.indices.tolist()
        stop = len(indices) - len(indices) % self.batch_size if self.drop_last else len(indices)
        try:
            for start in range(0, stop, self.batch_size):
                yield indices[start : start + self.batch_size]
        finally:
            self.handle._end_epoch(plan.epoch)

    def __len__(self) -> int:
        """Batches in the pass under way, or else in the next pass (without drawing its plan)."""
        size = self.handle._upcoming_size()
        return size // self.batch_size if self.drop_last else -(-size // self.batch_size)


@dataclass
class _Batch:
    """The batch whose trace is being recorded: set by ``weighted_loss``."""

    indices: np.ndarray
    correction: torch.Tensor  # B / w_i: turns the captured error back into dL_i/do
    serial: int  # numbers the batches of this handle
    epoch: int = -1
    scores: torch.Tensor | None = None  # accumulated over backward passes (truncated BPTT)


@dataclass
class _Checks:
    """One-off checks made on the first recorded training step."""

    executed: list[str] = field(default_factory=list)  # tappable layers, in the order they ran
    hooks: list[Any] = field(default_factory=list)  # removed once the checks are made
    done: bool = False


class TorchHandle(Pruner):
    """A :class:`~sadp_core.Pruner` attached to a PyTorch SNN (see :func:`sadp_core.attach`).

    Args:
        model: the ``torch.nn.Module``.
        framework: what a spiking layer is in the model's framework.
        readout: the readout layer, by name or as the module; found automatically if None.
        scope: ``"readout"`` (default) or ``"all"`` (every Linear and Conv layer, combined
            as the root of the sum of squared bounds).
        score: ``"bound"`` (the spike-aware bound, default) or ``"exact"`` (the exact norm of
            the tapped Linear layers' gradients by the ghost-norm identity; more memory).
        **options: the :class:`~sadp_core.Pruner` options (``num_examples``, ``epochs``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        framework: TorchFramework,
        *,
        readout: str | nn.Module | None = None,
        scope: str = "readout",
        score: str = "bound",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if scope not in ("readout", "all"):
            raise SADPError(f"scope must be 'readout' or 'all', got {scope!r}")
        if score not in ("bound", "exact"):
            raise SADPError(f"score must be 'bound' or 'exact', got {score!r}")
        self.model, self.framework, self.scope, self.score_kind = model, framework, scope, score
        self._check_spiking(model)
        candidates = _candidates(model, framework)
        self.readout_name = _choose_readout(model, candidates, readout, framework)
        self._auto_readout = readout is None
        layers = (
            candidates if scope == "all" else [(self.readout_name, model.get_submodule(self.readout_name))]
        )
        if score == "exact":
            for name, module in layers:
                if not isinstance(module, nn.Linear):
                    raise SADPError(
                        f"score='exact' supports Linear layers only; {name!r} is {type(module).__name__}"
                    )
        self._taps: list[_Tap] = []
        self._hooks: list[Any] = []
        self._checks = _Checks(done=True)
        if self.expects == "bound":
            self._taps = [_Tap(name, module, self, keep_tensors=score == "exact") for name, module in layers]
            self._hooks = [tap.hook for tap in self._taps]
            self._install_checks(candidates)
        self._batch: _Batch | None = None
        self._weight_of: np.ndarray | None = None
        self._weights_epoch = -1
        self._next_epoch = 0
        self._in_progress: int | None = None
        self._received = False  # a backward pass scored the current trace
        self._generation = 0  # numbers the traces (a forward after a backward starts a new one)
        self._queued = False  # the end-of-backward callback is queued
        self._named = False  # weighted_loss named the batch since the last backward pass
        self._unrecorded: dict[int, tuple[np.ndarray, torch.Tensor]] = {}  # see _record_scores
        self._serial = 0

    # -- data --------------------------------------------------------------------------

    def indexed(self, dataset: Any) -> IndexedDataset:
        """``dataset`` with items ``(index, item)``, for a ``DataLoader`` over this handle."""
        if len(dataset) != self.num_examples:
            raise SADPError(
                f"the dataset has {len(dataset)} examples but the handle was made for "
                f"num_examples={self.num_examples}"
            )
        return IndexedDataset(dataset)

    def batch_sampler(self, batch_size: int, drop_last: bool = False) -> PlanBatchSampler:
        """A batch sampler over the plans: each pass plans and yields the next epoch."""
        return PlanBatchSampler(self, batch_size, drop_last)

    def _upcoming_size(self) -> int:
        if self._in_progress is not None:
            return len(self.plan(self._in_progress).indices)
        epoch, drawn = self._next_epoch, self._plan
        if drawn is not None and drawn.epoch == epoch:
            return len(drawn.indices)
        if self.schedule.phase(epoch) != "prune" or not self.method.prunes:
            return self.num_examples
        if self.method.name == "infobatch":  # its size depends on the scores: draw the plan
            return len(self.plan(epoch).indices)
        return self.budget

    def _end_epoch(self, epoch: int) -> None:
        if self._in_progress == epoch:
            self._in_progress = None

    def _begin_epoch(self) -> Plan:
        epoch = self._next_epoch
        plan = self.plan(epoch)
        self._next_epoch, self._in_progress = epoch + 1, epoch
        return plan

    # -- the loss ----------------------------------------------------------------------

    def weighted_loss(self, losses: torch.Tensor, indices: Any) -> torch.Tensor:
        """The batch mean of the plan's weights times the per-example ``losses``.

        Args:
            losses: ``[B]`` unweighted per-example losses (a criterion with ``reduction="none"``).
            indices: ``[B]`` the batch's example indices (as the ``DataLoader`` yields them).

        It also tells the handle which examples the trace being recorded belongs to; call it
        before every backward pass. Several backward passes on the same batch (truncated
        BPTT: same indices, same epoch, ``weighted_loss`` before each) add up their scores.
        For the loss-based methods the losses themselves are the scores, recorded here.
        """
        if isinstance(indices, torch.Tensor):  # as a DataLoader yields them: the fast way to numpy
            indices = indices.detach().cpu().numpy()
        index_array = self._check_indices(indices)
        if (
            not isinstance(losses, torch.Tensor)
            or losses.ndim != 1
            or losses.shape[0] != index_array.shape[0]
        ):
            shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            hint = ""
            if (
                isinstance(losses, torch.Tensor)
                and losses.ndim > 1
                and losses.shape[0] == index_array.shape[0]
            ):
                hint = "; reduce the other axes per example first, e.g. losses.mean(dim=1)"
            raise SADPError(
                f"losses must be a [B] tensor of per-example losses (reduction='none') matching "
                f"{index_array.shape[0]} indices, got {shape}{hint}"
            )
        weights = self._weights_for(index_array)
        weight_tensor = torch.as_tensor(weights, dtype=losses.dtype, device=losses.device)
        epoch = self._plan.epoch if self._plan is not None else -1
        last = self._batch
        same = (  # the same batch again (truncated BPTT)
            last is not None and last.epoch == epoch and np.array_equal(last.indices, index_array)
        )
        if self._taps and not same:
            correction = index_array.shape[0] / weight_tensor.detach().float()
            self._serial += 1
            self._batch = _Batch(index_array, correction, self._serial, epoch=epoch)
            for tap in self._taps:
                tap.drop_before(self._generation)  # records of earlier batches
        self._named = True
        if self.expects == "loss":
            self._serial += 1
            self._hold_scores(self._serial, index_array, losses.detach())
        return (weight_tensor * losses).mean()

    def _weights_for(self, indices: np.ndarray) -> np.ndarray:
        plan = self._plan
        if plan is None:
            raise SADPError("no plan yet: iterate h.batch_sampler(...) (or call h.plan(epoch)) first")
        if self._weights_epoch != plan.epoch or self._weight_of is None:
            self._weight_of = np.zeros(self.num_examples)  # 0: not in the plan (plan weights are > 0)
            self._weight_of[plan.indices] = plan.weights
            self._weights_epoch = plan.epoch
        weights = self._weight_of[indices]
        if not weights.min(initial=1.0) > 0:
            missing = indices[weights == 0][:5].tolist()
            raise SADPError(f"examples {missing} are not in the plan of epoch {plan.epoch}; use its batches")
        return weights

    # -- trace bookkeeping (called by the taps) ------------------------------------------

    def _note_forward(self, layer: str) -> int:
        """A tapped layer ran: returns the generation its trace belongs to."""
        if self._received:
            self._generation += 1  # the first forward after a backward: a new trace
            self._received = False
        if not self._checks.done:
            self._checks.executed.append(layer)
        return self._generation

    def _note_backward(self) -> None:
        """A tapped output got its gradient: score the batch when this backward pass ends."""
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._finish_backward)

    def _clear_trace(self) -> None:
        """After a backward pass: forget its gradients, keep the batch's forward records."""
        for tap in self._taps:
            tap.clear_errors()
        self._queued, self._received, self._named = False, True, False

    def _finish_backward(self) -> None:
        """End of a backward pass: scores of the batch from the recorded norms.

        An autograd callback at the end of the backward pass, so the scores are in place
        when ``backward()`` returns. Only the calls that received a gradient in this pass
        count; over several passes on one batch (truncated BPTT) the scores add up.
        """
        batch = self._batch
        try:
            if batch is None or not self._named:
                raise SADPError(
                    "a backward pass ran without h.weighted_loss(losses, indices) naming its batch; "
                    "compute every training loss with h.weighted_loss"
                )
            size = batch.indices.shape[0]
            per_layer = [
                tap.exact(size) if self.score_kind == "exact" else tap.bound(size) for tap in self._taps
            ]
            present = [b for b in per_layer if b is not None]
            if not present:
                return
            combined = present[0] if len(present) == 1 else torch.stack(present).square().sum(0).sqrt()
            # the captured error is (w_i / B) dL_i/do: undo the weight and the batch mean
            scores = combined * batch.correction
            batch.scores = scores if batch.scores is None else batch.scores + scores
            if not self._checks.done:
                self._run_checks()
            self._hold_scores(batch.serial, batch.indices, batch.scores)
        finally:
            self._clear_trace()

    def _hold_scores(self, key: int, indices: np.ndarray, scores: torch.Tensor) -> None:
        """Keep a batch's scores until the next write (a later entry of the same batch replaces it)."""
        self._unrecorded[key] = (indices, scores)
        if len(self._unrecorded) >= _RECORD_EVERY:
            self._record_scores()

    def _record_scores(self) -> None:
        """Write the scores computed since the last call into the table, in one go.

        Copying scores to the host, checking them and writing them costs far more per call
        than per example, so backward passes leave their scores here (as tensors) and every
        read of the table (``scores``, ``plan``, ``stats``, ``state_dict``, ...) writes them
        first: the table reads as if each backward pass had written its own.
        """
        if not self._unrecorded:
            return
        entries = list(self._unrecorded.values())
        self._unrecorded.clear()
        indices = np.concatenate([index for index, _ in entries])
        values = torch.cat([score.detach().float() for _, score in entries]).cpu().numpy().astype(np.float64)
        if len(entries) > 1 and np.unique(indices).size < indices.size:  # drawn with replacement
            last = indices.size - 1 - np.unique(indices[::-1], return_index=True)[1]  # the latest wins
            indices, values = indices[last], values[last]
        self._record(indices, values)

    @property
    def scores(self) -> np.ndarray:
        """The latest score of every example (NaN where none yet), up to the last backward pass.

        Reading it first writes the scores still waiting as tensors; read it anew after a
        step rather than keeping an older view of it.
        """
        self._record_scores()
        return super().scores

    @property
    def stats(self) -> PrunerStats:
        self._record_scores()
        return super().stats

    def plan(self, epoch: int) -> Plan:
        self._record_scores()
        return super().plan(epoch)

    def update(self, indices: Any, scores: Any) -> None:
        self._record_scores()
        super().update(indices, scores)

    # -- checks ------------------------------------------------------------------------

    def _check_spiking(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise SADPError(f"expected a torch.nn.Module, got {type(model).__name__}")
        if not any(isinstance(m, self.framework.neuron_types) for m in model.modules()):
            raise SADPError(
                f"no {self.framework.name} spiking layer found in {type(model).__name__}; "
                "attach() needs a spiking network (or use sadp_core.Pruner directly)"
            )

    def _install_checks(self, candidates: list[tuple[str, nn.Module]]) -> None:
        """On the first step: is the readout the last layer run? Does BatchNorm follow a tap?"""
        self._checks = _Checks()
        if self._auto_readout and self.scope == "readout":
            tapped = {tap.name for tap in self._taps}
            for name, module in candidates:
                if name not in tapped:
                    self._checks.hooks.append(
                        module.register_forward_hook(lambda m, a, o, name=name: self._note_candidate(name))
                    )
        tap_outputs = self._taps
        for name, module in self.model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                self._checks.hooks.append(
                    module.register_forward_pre_hook(
                        lambda m, args, name=name: _warn_if_normalises_tap(m, args, name, tap_outputs)
                    )
                )

    def _note_candidate(self, name: str) -> None:
        recomputing = torch._C._current_graph_task_id() != -1  # a checkpoint inside backward
        if not self._checks.done and self.model.training and torch.is_grad_enabled() and not recomputing:
            self._checks.executed.append(name)

    def _run_checks(self) -> None:
        checks = self._checks
        if checks.done:
            return
        if self._auto_readout and self.scope == "readout" and checks.executed:
            last = checks.executed[-1]
            if last != self.readout_name:
                checks.executed.clear()  # stays not done: every backward raises until re-attached
                raise SADPError(
                    f"ambiguous readout: {self.readout_name!r} is defined last but {last!r} runs last; "
                    f"pass readout='{last}' (or the right layer's name) to attach()"
                )
        checks.done = True
        for hook in checks.hooks:
            hook.remove()

    # -- life cycle --------------------------------------------------------------------

    def detach(self) -> None:
        """Remove every hook; the model is as it was before ``attach``."""
        self._record_scores()
        for hook in [*self._hooks, *self._checks.hooks]:
            hook.remove()
        self._hooks.clear()
        self._taps = []

    def __enter__(self) -> TorchHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def state_dict(self) -> dict[str, Any]:
        """The Pruner state plus the epoch counter of :meth:`batch_sampler`.

        Arrays are torch tensors, so ``torch.save`` / ``torch.load`` (``weights_only=True``)
        round-trip it with a model checkpoint.
        """
        self._record_scores()
        state = _arrays_to_tensors(super().state_dict())
        state["torch"] = {"next_epoch": self._next_epoch, "scope": self.scope, "readout": self.readout_name}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch_state = state.get("torch") if isinstance(state, dict) else None
        saved = (torch_state["scope"], torch_state["readout"]) if torch_state else None
        if saved is not None and saved != (self.scope, self.readout_name):
            raise SADPError(
                f"this state was saved with scope={saved[0]!r}, readout={saved[1]!r}; "
                f"this handle has scope={self.scope!r}, readout={self.readout_name!r}"
            )
        super().load_state_dict(state)
        self._next_epoch = int(torch_state["next_epoch"]) if torch_state else self._next_epoch
        self._in_progress = None


def _arrays_to_tensors(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {key: _arrays_to_tensors(item) for key, item in value.items()}
    return value


def _warn_if_normalises_tap(module: nn.Module, args: tuple[Any, ...], name: str, taps: list[_Tap]) -> None:
    if module.training and args and any(id(args[0]) == tap.last_output_id for tap in taps):
        warnings.warn(
            f"BatchNorm {name!r} normalises the output of a tapped layer in training mode, which mixes "
            "examples: per-example scores are then approximate. Put it in eval mode, or tap another layer",
            SADPWarning,
            stacklevel=2,
        )


def _candidates(model: nn.Module, framework: TorchFramework) -> list[tuple[str, nn.Module]]:
    """Linear and Conv layers in definition order, without those internal to a neuron."""
    internal = set()
    for parent_name, parent in model.named_modules():
        for attribute, child in parent.named_children():
            if isinstance(child, _TAPPABLE) and framework.is_internal(parent, attribute, child):
                internal.add(f"{parent_name}.{attribute}" if parent_name else attribute)
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, _TAPPABLE) and name not in internal
    ]


def _choose_readout(
    model: nn.Module, candidates: list[tuple[str, nn.Module]], readout: str | nn.Module | None, framework: Any
) -> str:
    names = [name for name, _ in candidates]
    if readout is None:
        if not candidates:
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
