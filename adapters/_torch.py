"""The PyTorch side of ``attach``: trace capture, data plumbing, and the handle.

Shared by the SpikingJelly and snnTorch adapters, which only say what a spiking layer is
in their framework (:class:`TorchFramework`). The handle is a :class:`sadp_core.Pruner`
that also:

- taps the readout (or, with ``scope="all"``, every Linear and Conv layer) and keeps the
  per-step norms of the layer's input and of the error reaching its output; nothing
  larger than ``[T, B]`` is kept (see :class:`~._torch_trace.Tap`);
- turns these norms into each example's spike-aware score, undoing the loss weight and the
  batch mean, in one vectorised pass every 64 batches and before anything reads the score
  table, so ``h.scores[idx]`` holds a batch's scores as soon as ``backward()`` returns;
- reports every batch named by ``weighted_loss`` whose backward pass brought no trace
  (an :class:`~sadp_core.SADPWarning` naming the cause, and ``stats.unscored_batches``);
  eval-mode training is traced like training mode, ``torch.no_grad()`` evaluation is not;
- feeds a ``DataLoader``: :meth:`TorchHandle.indexed` wraps the dataset so items carry
  their index, :meth:`TorchHandle.batch_sampler` plans the next epoch at each pass.

Length: about 630 lines, nearly all of it :class:`TorchHandle`, whose methods share the
handle's private state (the named batch, the taps, the outbox of scores); the trace
(``_torch_trace``), the checks (``_torch_checks``) and the data side (``_torch_data``) are
already their own modules.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from sadp_core.errors import SADPError, SADPWarning
from sadp_core.pruner import Plan, Pruner, PrunerStats

from . import _distributed
from ._options import check_score_options
from ._torch_checks import Checks, Delivery, candidates, choose_readout, warn_if_normalises_tap
from ._torch_data import IndexedDataset, PlanBatchSampler
from ._torch_trace import Batch, Piece, SlotCache, Tap, bound_sums, exact_sums

__all__ = ["IndexedDataset", "PlanBatchSampler", "TorchFramework", "TorchHandle"]

_RECORD_EVERY = 64  # backward passes whose scores wait, as small tensors, for one write


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


@dataclass
class _Written:
    """A batch whose scores were written: per-layer sums so far, ``[B, layers]``."""

    epoch: int
    indices: np.ndarray
    weights: np.ndarray
    sums: np.ndarray


def _repeats(indices: np.ndarray, sizes: np.ndarray, epochs: np.ndarray, last: _Written | None) -> np.ndarray:
    """Per batch, whether it repeats the one before it: same epoch, same examples in the same
    order (the first batch is compared with the batch written ``last``). ``indices`` holds
    the batches one after another, ``sizes`` examples each."""
    repeats = np.zeros(sizes.size, dtype=bool)
    repeats[0] = (
        last is not None and last.epoch == epochs[0] and np.array_equal(last.indices, indices[: sizes[0]])
    )
    if (sizes == sizes[0]).all():  # the common case, at once
        rows = indices.reshape(sizes.size, -1)
        repeats[1:] = (rows[1:] == rows[:-1]).all(1) & (epochs[1:] == epochs[:-1])
        return repeats
    starts = np.cumsum(sizes) - sizes
    for i in range(1, sizes.size):
        repeats[i] = (
            sizes[i] == sizes[i - 1]
            and epochs[i] == epochs[i - 1]
            and np.array_equal(indices[starts[i] : starts[i] + sizes[i]], indices[starts[i - 1] : starts[i]])
        )
    return repeats


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
        check_score_options(scope, score)
        self.model, self.framework, self.scope, self.score_kind = model, framework, scope, score
        self._check_spiking(model)
        found = candidates(model, framework)
        self.readout_name = choose_readout(model, found, readout, framework)
        self._auto_readout = readout is None
        layers = found if scope == "all" else [(self.readout_name, model.get_submodule(self.readout_name))]
        if score == "exact":
            for name, module in layers:
                if not isinstance(module, nn.Linear):
                    raise SADPError(
                        f"score='exact' supports Linear layers only; {name!r} is {type(module).__name__}"
                    )
        self._taps: list[Tap] = []
        self._checks = Checks(done=True)
        if self.expects == "bound":
            self._taps = [
                Tap(index, name, module, self, keep_tensors=score == "exact")
                for index, (name, module) in enumerate(layers)
            ]
            self._install_checks(found)
        self._batch: Batch | None = None
        self._previous_batch: Batch | None = None
        self._batch_generation = 0  # traces older than the current batch's are ignored
        self._weight_table: torch.Tensor | None = None  # plan weight of every example, 0 if not planned
        self._weights_plan: Plan | None = None  # the plan _weight_table holds
        self._next_epoch = 0
        self._in_progress: int | None = None
        self._received = False  # a backward pass reached the current trace
        self._generation = 0  # numbers the traces (a forward after a backward starts a new one)
        self._named = False  # weighted_loss named the batch since the last backward pass began
        self._ran = False  # a tap ran with gradients since the last backward pass reached a loss
        self._delivery = Delivery()  # see _check_delivered
        self._pass = -1  # the autograd graph task of the backward pass under way
        self._pieces: list[Piece] = []  # see _record_scores
        self._pending_batches = 0  # batches named since the last write
        self._losses: list[tuple[np.ndarray, torch.Tensor]] = []  # loss-based methods: their scores
        self._outbox: list[tuple[np.ndarray, np.ndarray]] = []  # scores not yet sent to the other ranks
        self._slots = SlotCache()  # see bound_sums
        self._last_written: _Written | None = None  # the batch scored last, for truncated BPTT
        self._since_sync = 0  # batches named since the last exchange with the other ranks

    @property
    def layer_names(self) -> list[str]:
        """The names of the traced layers: the readout, or every Linear and Conv layer
        (``scope="all"``); empty for the loss-based methods and once detached."""
        return [tap.name for tap in self._taps]

    # -- data --------------------------------------------------------------------------

    def indexed(self, dataset: Any) -> IndexedDataset:
        """``dataset`` with items ``(index, item)``, for a ``DataLoader`` over this handle."""
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise SADPError(
                f"indexed() needs a map-style dataset (with __len__ and __getitem__), got "
                f"{type(dataset).__name__}"
            )
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

    def _check_next_epoch(self, epoch: int) -> None:
        """Raise if a pass of :meth:`batch_sampler` cannot be epoch ``epoch``: outside the
        schedule, or older than the latest plan drawn (see :meth:`plan`)."""
        self.schedule.phase(epoch)  # raises outside the schedule
        latest = self._plan.epoch if self._plan is not None else -1
        if epoch < latest:
            raise SADPError(
                f"set_epoch({epoch}): the plan of epoch {latest} is already drawn and plans are drawn in "
                f"epoch order; continue with epoch {latest} or later (or load a checkpoint)"
            )

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

        Any backward pass with gradients is traced, in training or eval mode alike. A batch
        whose backward pass brings no trace (none ran, or it did not reach the readout) is
        reported with an :class:`~sadp_core.SADPWarning` when the next batch is named or the
        table is read, and counted in ``stats.unscored_batches`` (the guide's "Training
        loops that work" lists the causes).
        """
        # the hot path of every step, kept to one lookup and one count: the weight table is
        # zero outside the plan, and an index out of range makes the lookup fail
        table, weights = self._weight_table, None
        if (
            table is not None
            and self._weights_plan is self._plan
            and isinstance(indices, torch.Tensor)
            and isinstance(losses, torch.Tensor)
            and indices.ndim == 1
            and losses.shape == indices.shape
            and losses.is_floating_point()
            and indices.shape[0] > 0
        ):
            try:
                weights = table.index_select(0, indices)
            except (IndexError, RuntimeError):  # out of range, not integers, not on the CPU
                weights = None
            if weights is not None and int(torch.count_nonzero(weights)) != weights.shape[0]:
                weights = None  # not all in the plan
        if weights is None:  # anything else is looked at closely, with clear errors
            indices, weights = self._checked_batch(losses, indices)
        loss_weights = weights
        if losses.dtype is not torch.float32 or not losses.is_cpu:
            # no wait on the GPU's queue: ``weights`` is a fresh host tensor that nothing changes
            loss_weights = weights.to(dtype=losses.dtype, device=losses.device, non_blocking=True)
        result = (loss_weights * losses).mean()
        if self._taps:  # name the batch the next backward pass belongs to
            plan, generation = self._weights_plan, self._generation
            batch = Batch(indices, weights, plan.epoch if plan is not None else -1, generation)
            if self._named:  # no backward pass reached a tap since the batch before was named
                self._check_delivered(batch)
            if self.score_kind == "exact":
                self._record_scores()  # release the raw tensors of the last batch now
            self._previous_batch, self._batch = self._batch, batch
            self._batch_generation, self._named = generation, True
            if result.grad_fn is not None:  # tells whether its backward pass ran (_check_delivered)
                result.grad_fn.register_prehook(partial(self._loss_reached, batch))
            self._count_batch()
        elif self.expects == "loss":
            self._losses.append((indices.numpy(), losses.detach()))
            self._count_batch()
        return result

    def _checked_batch(self, losses: Any, indices: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Check a batch in full: its indices, the plan, the losses' shape; clear errors.
        Gives the indices (int64) and their plan weights, as CPU tensors."""
        index_array = self._check_indices(indices)
        plan = self._plan
        if plan is None:
            raise SADPError("no plan yet: iterate h.batch_sampler(...) (or call h.plan(epoch)) first")
        if self._weights_plan is not plan or self._weight_table is None:
            table = torch.zeros(self.num_examples, dtype=torch.float32)  # see weighted_loss
            table[torch.tensor(plan.indices)] = torch.tensor(plan.weights, dtype=torch.float32)
            self._weight_table, self._weights_plan = table, plan
        if index_array.shape[0] == 0:
            raise SADPError("the batch is empty (no indices): name only batches with examples")
        if not _per_example(losses, index_array.shape[0]):
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
        if not losses.is_floating_point():
            raise SADPError(
                f"losses must be a floating-point tensor (the criterion's output), got dtype {losses.dtype}"
            )
        index_tensor = torch.tensor(index_array)  # a copy: the caller may change its array
        weights = self._weight_table[index_tensor]
        values = weights.numpy()
        if not values.min(initial=1.0) > 0:
            missing = index_array[values == 0][:5].tolist()
            raise SADPError(f"examples {missing} are not in the plan of epoch {plan.epoch}; use its batches")
        return index_tensor, weights

    def _continues(self, generation: int) -> bool:
        """Whether a trace older than the current batch belongs to it all the same: the
        examples of the batch before were the same (truncated BPTT whose chunks are not
        detached, so a backward pass reaches the earlier chunks). Checked only when such a
        trace arrives; the batches are merged when the scores are written."""
        batch, previous = self._batch, self._previous_batch
        if batch is None:
            return False
        if (
            batch.since > generation
            and previous is not None
            and previous.epoch == batch.epoch
            and previous.indices.shape == batch.indices.shape
            and torch.equal(previous.indices.long(), batch.indices.long())
        ):
            batch.since = previous.since
        return batch.since <= generation

    def _loss_reached(self, batch: Batch, grads: tuple[torch.Tensor | None, ...]) -> None:
        """A backward pass reached the loss of ``batch``: did a tap run since the pass before?
        Keeps the gradient that reached the loss (its seed), which every error the taps get
        in this pass is multiplied by, to be divided out when the scores are written."""
        batch.reached, batch.ran, self._ran = True, self._ran, False
        if grads and grads[0] is not None:
            batch.seed = grads[0].detach()

    def _check_delivered(self, naming: Batch | None = None) -> None:
        """Report the current batch if no backward pass has brought it a trace, and it is final:
        its backward pass ran, or the next batch is being named (``naming``). See
        :class:`~._torch_checks.Delivery` for the causes and the warning."""
        if self._named and self._batch is not None:
            self._delivery.check(self._batch, self._taps, naming)

    def _count_batch(self) -> None:
        """A new batch: every 64, the scores waiting are written, and all ranks (in step, as
        under DDP) exchange their scores. Two counts, as reading the table writes the scores
        on one rank only."""
        if self._pending_batches >= _RECORD_EVERY:
            self._record_scores()
        self._pending_batches += 1
        self._since_sync += 1
        if self._since_sync >= _RECORD_EVERY:
            self._since_sync = 0
            if _distributed.active():
                self.synchronize()

    # -- trace bookkeeping (called by the taps) ------------------------------------------

    def _start_pass(self) -> None:
        """A tapped output got its gradient in a new backward pass: check it and its batch."""
        if self._batch is None or not self._named:
            raise SADPError(
                "a backward pass ran without h.weighted_loss(losses, indices) naming its batch; "
                "compute every training loss with h.weighted_loss"
            )
        self._batch.reported = True  # a tap was reached: a trace or an error, never silence
        if not self._checks.done:
            self._run_checks()
        self._pass, self._named, self._received = torch._C._current_graph_task_id(), False, True

    def _record_scores(self) -> None:
        """Turn the trace pieces gathered since the last call into scores, and write them.

        Scoring, copying to the host, checking and writing cost far more per call than per
        example, so the backward passes only leave pieces of trace here (small tensors) and
        this runs every 64 batches, vectorised over all of them, and before every read of
        the table (``scores``, ``plan``, ``stats``, ``state_dict``, ...): the table reads as
        if each backward pass had written its own scores.
        """
        self._check_delivered()
        self._pending_batches = 0
        if self._losses:
            entries, self._losses = self._losses, []
            indices = np.concatenate([index for index, _ in entries])
            values = torch.cat([loss.float() for _, loss in entries]).cpu().numpy().astype(np.float64)
            self._write(indices, values)
        if not self._pieces:
            return
        pieces, self._pieces = self._pieces, []
        batches = list({id(batch): batch for batch, *_ in pieces}.values())
        sums = (
            np.concatenate(exact_sums(pieces, batches, self._taps))
            if self.score_kind == "exact"
            else bound_sums(pieces, batches, self._taps, self._slots)
        )  # [examples of all batches, layers]
        sizes = np.array([batch.indices.shape[0] for batch in batches])
        epochs = np.array([batch.epoch for batch in batches])
        sums = sums / np.repeat(_seeds(batches), sizes)[:, None]  # the loss as weighted_loss gave it
        indices = torch.cat([batch.indices for batch in batches]).numpy().astype(np.int64, copy=False)
        weights = torch.cat([batch.weights for batch in batches]).numpy().astype(np.float64)
        repeats = _repeats(indices, sizes, epochs, self._last_written)
        if repeats.any():  # truncated BPTT: merge them
            indices, weights, sums, sizes = self._merge_repeats(
                indices, weights, sums, sizes, epochs, repeats
            )
        else:
            last = slice(indices.size - sizes[-1], None)
            self._last_written = _Written(int(epochs[-1]), indices[last], weights[last], sums[last])
        combined = sums[:, 0] if sums.shape[1] == 1 else np.sqrt(np.square(sums).sum(1))
        # the captured error is (w_i / B) dL_i/do: undo the weight and the batch mean
        self._write(indices, combined * (np.repeat(sizes.astype(np.float64), sizes) / weights))

    def _merge_repeats(
        self,
        indices: np.ndarray,
        weights: np.ndarray,
        sums: np.ndarray,
        sizes: np.ndarray,
        epochs: np.ndarray,
        repeats: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The batches as written, where the same batch several times in a row (truncated
        BPTT: several backward passes per batch; ``repeats`` from :func:`_repeats`) is written
        once with its sums added up, also to the batch written last before:
        ``(indices, weights, sums, sizes)``."""
        written: list[_Written] = []
        last = self._last_written
        starts = np.cumsum(sizes) - sizes
        batches = zip(epochs.tolist(), starts.tolist(), sizes.tolist(), repeats.tolist(), strict=True)
        for epoch, start, size, repeat in batches:
            rows = slice(start, start + size)
            batch_sums = sums[rows]
            if repeat and last is not None:
                batch_sums = batch_sums + last.sums  # the same batch again: its scores add up
                if written and written[-1] is last:
                    written.pop()
            last = _Written(epoch, indices[rows], weights[rows], batch_sums)
            written.append(last)
        self._last_written = last
        return (
            np.concatenate([entry.indices for entry in written]),
            np.concatenate([entry.weights for entry in written]),
            np.concatenate([entry.sums for entry in written]),
            np.array([entry.indices.size for entry in written]),
        )

    def _write(self, indices: np.ndarray, values: np.ndarray) -> None:
        if self._config["replacement"] and np.unique(indices).size < indices.size:  # repeats
            last = indices.size - 1 - np.unique(indices[::-1], return_index=True)[1]  # the latest wins
            indices, values = indices[last], values[last]
        if _distributed.active():
            self._outbox.append(self._checked_scores(indices, values))  # written at the next exchange
        else:
            self._record(indices, values)

    def synchronize(self) -> None:
        """Exchange the scores computed since the last exchange with every other rank.

        Under ``torch.distributed`` each rank scores its own share of the batches; the
        handle calls this on every rank every 64 batches, before drawing a new plan, and in
        :meth:`detach`, and every rank then writes everybody's scores in rank order, so the
        score tables are identical. Call it yourself, on every rank, before rank 0 saves a
        checkpoint (:meth:`state_dict` never communicates). Without a process group it only
        writes the scores still waiting.
        """
        self._record_scores()
        self._since_sync = 0
        if not _distributed.active() and not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        indices = np.concatenate([index for index, _ in outbox]) if outbox else np.zeros(0, np.int64)
        values = np.concatenate([value for _, value in outbox]) if outbox else np.zeros(0)
        received = _distributed.exchange(indices, values) if _distributed.active() else [(indices, values)]
        for rank_indices, rank_values in received:
            self._record(self._check_indices(rank_indices), rank_values)

    @property
    def scores(self) -> np.ndarray:
        """The latest score of every example (NaN where none yet), up to the last backward pass.

        Reading it first writes the scores still waiting as tensors; read it anew after a
        step rather than keeping an older view of it.
        """
        self._record_scores()
        table: np.ndarray = super().scores
        if not self._outbox:
            return table
        table = table.copy()  # under torch.distributed: with this rank's scores not yet exchanged
        for indices, values in self._outbox:
            table[indices] = values
        table.flags.writeable = False
        return table

    @property
    def stats(self) -> PrunerStats:
        """The :class:`~sadp_core.PrunerStats`, with ``unscored_batches``: batches named by
        :meth:`weighted_loss` whose backward pass brought no trace (each reported with an
        :class:`~sadp_core.SADPWarning` when the next batch was named or the table read)."""
        self._record_scores()
        return super().stats._replace(unscored_batches=self._delivery.unscored)

    def plan(self, epoch: int) -> Plan:
        """The plan of ``epoch`` (see :meth:`sadp_core.Pruner.plan`); under ``torch.distributed``
        the ranks exchange their scores before a new plan is drawn, so all draw the same."""
        drawn = self._plan
        if (drawn is None or drawn.epoch != epoch) and _distributed.active():
            self.synchronize()
        else:
            self._record_scores()
        return super().plan(epoch)

    def update(self, indices: Any, scores: Any) -> None:
        self._record_scores()
        if _distributed.active():
            self._outbox.append(self._checked_scores(self._check_indices(indices), scores))
        else:
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
        """On the first step: is the readout the last layer run? Does BatchNorm follow a tap?

        Global module hooks, filtered to this model's layers and removed after the first
        step: nothing is added to the model's own modules, which stay picklable.
        """
        self._checks = Checks()
        watched: dict[int, str] = {}
        if self._auto_readout and self.scope == "readout":
            tapped = {tap.name for tap in self._taps}
            watched = {id(module): name for name, module in candidates if name not in tapped}
        norms = {
            id(module): name
            for name, module in self.model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
        }
        taps = self._taps

        def note_candidate(module: nn.Module, args: Any, output: Any) -> None:
            name = watched.get(id(module))
            if name is not None:
                self._note_candidate(name)

        def check_norm(module: nn.Module, args: tuple[Any, ...]) -> None:
            name = norms.get(id(module))
            if name is not None:
                warn_if_normalises_tap(module, args, name, taps)

        if watched:
            self._checks.hooks.append(nn.modules.module.register_module_forward_hook(note_candidate))
        if norms:
            self._checks.hooks.append(nn.modules.module.register_module_forward_pre_hook(check_norm))

    def _note_candidate(self, name: str) -> None:
        recomputing = torch._C._current_graph_task_id() != -1  # a checkpoint inside backward
        if not self._checks.done and torch.is_grad_enabled() and not recomputing:
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
        """Remove every hook and restore the tapped layers' classes: the model is as it was
        before ``attach``.

        Under ``torch.distributed`` call it on every rank: the ranks exchange their last scores.
        """
        self.synchronize()
        for tap in self._taps:
            tap.remove()
        for hook in self._checks.hooks:
            hook.remove()
        self._checks.hooks.clear()
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
        if self._outbox:
            warnings.warn(
                "scores computed on this rank since the last exchange are not in this state_dict; "
                "call h.synchronize() on every rank before saving a checkpoint",
                SADPWarning,
                stacklevel=2,
            )
        state: dict[str, Any] = _arrays_to_tensors(super().state_dict())
        state["torch"] = {
            "next_epoch": self._next_epoch,
            "scope": self.scope,
            "readout": self.readout_name,
            "unscored_batches": self._delivery.unscored,
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a handle with the same settings; a state that does
        not fit (another ``N``, method, seed, scope or readout; a corrupt entry) raises
        :class:`~sadp_core.SADPError` and changes nothing."""
        torch_state = state.get("torch") if isinstance(state, dict) else None
        if torch_state is not None and (
            not isinstance(torch_state, dict) or "scope" not in torch_state or "readout" not in torch_state
        ):
            raise SADPError("the 'torch' entry of this state_dict is not a dict with scope and readout")
        saved = (torch_state["scope"], torch_state["readout"]) if torch_state else None
        if saved is not None and saved != (self.scope, self.readout_name):
            raise SADPError(
                f"this state was saved with scope={saved[0]!r}, readout={saved[1]!r}; "
                f"this handle has scope={self.scope!r}, readout={self.readout_name!r}"
            )
        next_epoch, unscored = self._next_epoch, 0
        if torch_state:
            next_epoch = _saved_count(torch_state.get("next_epoch"), "next_epoch")
            unscored = _saved_count(torch_state.get("unscored_batches", 0), "unscored_batches")
        super().load_state_dict(state)  # checks all of its part before it changes anything
        self._next_epoch, self._delivery.unscored, self._in_progress = next_epoch, unscored, None


def _saved_count(value: Any, name: str) -> int:
    """A non-negative integer of the saved ``torch`` state (a Python or 0-d tensor integer)."""
    if not isinstance(value, bool) and not (isinstance(value, torch.Tensor) and value.is_floating_point()):
        try:
            count = operator.index(value)
        except (TypeError, ValueError, RuntimeError):
            count = -1
        if count >= 0:
            return count
    raise SADPError(f"{name} in the 'torch' entry of this state_dict must be an integer >= 0, got {value!r}")


def _seeds(batches: list[Batch]) -> np.ndarray:
    """Per batch, the factor by which the gradient that reached its weighted loss scaled every
    error at the taps: GradScaler's scale, the ``1/k`` of ``(loss / k).backward()``; 1 where
    the loss was not reached (the trace came through another loss) or its gradient was 0.

    Dividing it out makes the scores those of the loss as ``weighted_loss`` returned it,
    whatever constant the loop multiplies it by before ``backward()``. One copy to the host
    for all the batches.
    """
    seeds = np.ones(len(batches))
    known = [number for number, batch in enumerate(batches) if batch.seed is not None]
    if known:
        values = torch.stack([cast(torch.Tensor, batches[number].seed).float() for number in known])
        magnitudes = np.abs(values.cpu().numpy().astype(np.float64))
        seeds[known] = np.where((magnitudes > 0) & np.isfinite(magnitudes), magnitudes, 1.0)
    return seeds


def _per_example(losses: Any, size: int) -> bool:
    """Whether ``losses`` is a ``[size]`` tensor: one loss per example of the batch."""
    return isinstance(losses, torch.Tensor) and losses.ndim == 1 and losses.shape[0] == size


def _arrays_to_tensors(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {key: _arrays_to_tensors(item) for key, item in value.items()}
    return value
