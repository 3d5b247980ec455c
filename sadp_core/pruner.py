"""The Pruner: one object that plans every epoch and keeps the score table.

>>> import numpy as np
>>> from sadp_core import Pruner
>>> p = Pruner(num_examples=10, prune_ratio=0.5, epochs=4, seed=0)
>>> plan = p.plan(0)                       # warm-up: every example, weight 1
>>> sorted(plan.indices.tolist()) == list(range(10)), plan.phase
(True, 'warmup')
>>> p.update(plan.indices, np.arange(10.0))  # scores of the examples just trained
>>> plan = p.plan(1)                       # pruned: 5 examples, unbiased weights
>>> len(plan.indices), plan.phase, round(float(plan.probabilities.sum()), 6)
(5, 'prune', 5.0)
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._array import to_numpy
from .errors import SADPError, SADPWarning
from .methods import METHODS, FullData, Method, ScoreTable, Stage, UniformRandom, make_method
from .ordering import EpochOrders
from .schedule import Phase, Schedule

__all__ = ["Plan", "Pruner", "PrunerStats"]

_STATE_VERSION = 1


class Plan(NamedTuple):
    """What one epoch trains on.

    Attributes:
        epoch: the 0-based epoch.
        phase: ``"warmup"``, ``"prune"`` or ``"anneal"``.
        indices: ``[K]`` int64 example indices, shuffled, no duplicates (unless the pruner
            samples with replacement).
        weights: ``[K]`` loss weights aligned with ``indices``: train on the batch mean of
            ``weights * per_example_loss``.
        probabilities: ``[N]`` inclusion probability of every example this epoch.
    """

    epoch: int
    phase: Phase
    indices: np.ndarray
    weights: np.ndarray
    probabilities: np.ndarray


class PrunerStats(NamedTuple):
    """Bookkeeping a run reports (see :attr:`Pruner.stats`).

    Attributes:
        epochs_planned: epochs whose plan has been drawn.
        examples_planned: examples in those plans together.
        processed_fraction: ``examples_planned / (epochs_planned * N)``: the share so far.
        projected_fraction: the share over the whole schedule (drawn plans, plus the
            budget of the epochs still to come).
        theoretical_speedup: ``1 / projected_fraction``, the most that pruning can save.
        nonfinite_scores: scores that were NaN or infinite and so were ignored.
        unscored_examples: examples that never received a score.
        unscored_batches: batches named for training whose backward pass brought no score
            (the PyTorch handle counts them, see ``TorchHandle.weighted_loss``; 0 elsewhere).
    """

    epochs_planned: int
    examples_planned: int
    processed_fraction: float
    projected_fraction: float
    theoretical_speedup: float
    nonfinite_scores: int
    unscored_examples: int
    unscored_batches: int = 0


@dataclass
class _Progress:
    last_epoch: int = -1
    examples_planned: int = 0
    epochs_planned: int = 0
    pruned_epochs_planned: int = 0
    pruned_examples_planned: int = 0
    nonfinite_scores: int = 0


def _in_order(indices: np.ndarray, weights: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct kept ``indices`` (and their weights) rearranged in the epoch's ``order``."""
    weight_of = np.zeros(order.shape[0])
    weight_of[indices] = weights  # every kept example has a weight > 0
    kept = order[weight_of[order] > 0]
    return kept, weight_of[kept]


class Pruner:
    """Plans which examples each epoch trains on, and learns from their scores.

    Args:
        num_examples: ``N``, the size of the training set.
        prune_ratio: ``r`` in ``[0, 1)``: pruning epochs keep ``K = round((1 - r) N)``.
        epochs: the number of epochs of the run (the schedule needs it for annealing).
        seed: seed of every random draw; the plan of epoch ``e`` depends only on the seed,
            ``e`` and the scores, never on global random state.
        method: ``"sadp"`` (default), ``"loss"``, ``"full"``, ``"random"``, ``"infobatch"``,
            ``"ucb"`` or ``"eps_greedy"``; see :mod:`sadp_core.methods`.
        warmup_epochs: leading epochs that use all data, so every example gets a score.
        anneal_fraction: share of the last epochs that use all data with weight 1.
        smoothing: ``lambda`` of the score smoothing ``s + lambda * mean(s)`` (sadp, loss).
        replacement: sample with replacement instead of the fixed-size draw (sadp, loss).
        exploration: the ``c`` of UCB's ``mean + c * std``.
        epsilon: share of the budget that epsilon-greedy draws at random.
        decay: decay of the moving averages that UCB and epsilon-greedy keep.
        correction: how far the weights of ``"sadp"`` and ``"loss"`` correct their sampler's
            bias: ``"unbiased"`` (Horvitz-Thompson ``K / (N pi_i)``), ``"none"`` (weight 1:
            biased towards high scores), or ``"annealed"`` (``(K / (N pi_i)) ** beta`` with
            ``beta`` rising from 0 at the first pruned epoch to 1 at the last).

    Plans are drawn once: the first ``plan(epoch)`` call draws that epoch's plan from the
    current state, later calls return the same plan. Feed the scores of the examples just
    trained with :meth:`update`: the spike-aware bound for ``"sadp"``, the unweighted
    per-example loss for the other methods (:attr:`expects` says which).
    """

    def __init__(
        self,
        *,
        num_examples: int,
        prune_ratio: float = 0.3,
        epochs: int,
        seed: int = 0,
        method: str = "sadp",
        warmup_epochs: int = 1,
        anneal_fraction: float = 0.125,
        smoothing: float = 0.1,
        replacement: bool = False,
        exploration: float = 1.0,
        epsilon: float = 0.1,
        decay: float = 0.9,
        correction: str = "annealed",
    ) -> None:
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise SADPError(f"num_examples must be a positive integer, got {num_examples!r}")
        if (
            isinstance(prune_ratio, bool)
            or not isinstance(prune_ratio, (int, float))
            or not 0 <= prune_ratio < 1
        ):
            raise SADPError(f"prune_ratio must be a number in [0, 1), got {prune_ratio!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SADPError(f"seed must be a non-negative integer, got {seed!r}")
        if not isinstance(method, str) or method not in METHODS:
            raise SADPError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self._config: dict[str, Any] = dict(
            num_examples=num_examples, prune_ratio=float(prune_ratio), epochs=epochs, seed=seed,
            method=method, warmup_epochs=warmup_epochs, anneal_fraction=float(anneal_fraction),
            smoothing=float(smoothing), replacement=bool(replacement),
            exploration=float(exploration), epsilon=float(epsilon), decay=float(decay),
            correction=correction,
        )  # fmt: skip
        self.schedule = Schedule(epochs, warmup_epochs, anneal_fraction)
        self.method: Method = make_method(
            method, prune_ratio=float(prune_ratio), smoothing=smoothing, replacement=replacement,
            exploration=exploration, epsilon=epsilon, decay=decay, correction=correction,
        )  # fmt: skip
        self._size = num_examples
        self._table = ScoreTable.empty(num_examples, history=self.method.keeps_history)
        self._orders = EpochOrders(num_examples, seed)
        self._progress = _Progress()
        self._plan: Plan | None = None

    # -- configuration -----------------------------------------------------------------

    @property
    def num_examples(self) -> int:
        """``N``."""
        return int(self._config["num_examples"])

    @property
    def prune_ratio(self) -> float:
        """``r``."""
        return float(self._config["prune_ratio"])

    @property
    def epochs(self) -> int:
        """Epochs of the schedule."""
        return self.schedule.epochs

    @property
    def seed(self) -> int:
        """Seed of every draw."""
        return int(self._config["seed"])

    @property
    def budget(self) -> int:
        """``K = round((1 - r) N)``, the examples a pruning epoch keeps (at least 1)."""
        return max(1, round((1 - self.prune_ratio) * self.num_examples))

    @property
    def expects(self) -> str:
        """Which value :meth:`update` expects, ``"bound"`` (spike-aware score) or ``"loss"``."""
        return self.method.expects

    @property
    def scores(self) -> np.ndarray:
        """The latest score of every example (NaN where none was received yet); read-only."""
        view: np.ndarray = self._table.latest.view()
        view.flags.writeable = False
        return view

    # -- planning ----------------------------------------------------------------------

    def plan(self, epoch: int) -> Plan:
        """The plan of ``epoch``: drawn from the current state on the first call, then fixed.

        Raises:
            SADPError: if ``epoch`` is outside the schedule, or older than the latest
                drawn plan (only the latest plan is kept).
        """
        phase = self.schedule.phase(epoch)
        if self._plan is not None and epoch == self._plan.epoch:
            return self._plan
        if epoch < self._progress.last_epoch:
            raise SADPError(
                f"the plan of epoch {epoch} was replaced by that of epoch {self._progress.last_epoch}; "
                "plans are drawn in epoch order and only the latest is kept"
            )
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(epoch,))))
        order = self._orders.draw(rng)
        method: Method = self.method
        if phase != "prune":
            partial = phase == "anneal" and method.partial_anneal
            method = UniformRandom() if partial else FullData()
        stage = Stage(epoch - self.schedule.warmup_epochs, self.schedule.pruned_epochs)
        selection = method.select(self._table, self.budget, rng, order, stage)
        indices, weights = selection.indices, selection.weights
        if not selection.ordered:
            indices, weights = _in_order(indices, weights, order)
        plan = Plan(
            epoch, phase, indices.astype(np.int64, copy=False), np.asarray(weights, dtype=np.float64),
            np.asarray(selection.probabilities, dtype=np.float64),
        )  # fmt: skip
        for array in plan[2:]:
            array.flags.writeable = False
        self._record_plan(plan)
        return plan

    def _record_plan(self, plan: Plan) -> None:
        progress = self._progress
        progress.last_epoch = plan.epoch
        progress.epochs_planned += 1
        progress.examples_planned += int(plan.indices.shape[0])
        if plan.phase == "prune":
            progress.pruned_epochs_planned += 1
            progress.pruned_examples_planned += int(plan.indices.shape[0])
        self._plan = plan

    # -- learning ----------------------------------------------------------------------

    def update(self, indices: Any, scores: Any) -> None:
        """Record the scores of examples just trained.

        Args:
            indices: ``[B]`` integer example indices (numpy, torch, jax, a list, ...).
            scores: ``[B]`` non-negative scores aligned with ``indices``: the spike-aware
                bound for ``"sadp"``, the unweighted loss for the other methods.

        Non-finite scores are ignored (the example keeps its previous score), counted in
        :attr:`stats`, and reported with an :class:`SADPWarning`. Any other bad input
        raises :class:`SADPError` before anything is written.
        """
        self._record(self._check_indices(indices), scores)

    def _record(self, index_array: np.ndarray, scores: Any) -> None:
        """:meth:`update` for indices already checked by :meth:`_check_indices`."""
        index_array, values = self._checked_scores(index_array, scores)
        self._table.record(index_array, values, self._config["decay"])

    def _checked_scores(self, index_array: np.ndarray, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """The scores as float64, checked; non-finite ones dropped (counted, with a warning)."""
        trusted = (
            isinstance(scores, np.ndarray)
            and scores.dtype == np.float64
            and scores.shape == index_array.shape
        )
        if trusted and np.isfinite(scores).all() and not scores.min(initial=0.0) < 0:  # the common case, fast
            return index_array, scores
        values = to_numpy(scores, "scores")
        if values.ndim != 1 or values.shape[0] != index_array.shape[0]:
            raise SADPError(
                f"scores must be one score per index: got {index_array.shape[0]} indices "
                f"and scores of shape {values.shape}"
            )
        if values.dtype.kind not in "fiu":
            raise SADPError(f"scores must be real numbers, got dtype {values.dtype}")
        values = values.astype(np.float64, copy=False)
        finite = np.isfinite(values)
        all_finite = bool(finite.all())
        if (values[finite] if not all_finite else values).min(initial=0.0) < 0:
            raise SADPError("scores must be >= 0 (gradient-norm bounds or losses); got a negative score")
        if not all_finite:
            ignored = int(finite.size - np.count_nonzero(finite))
            self._progress.nonfinite_scores += ignored
            warnings.warn(
                f"{ignored} non-finite score(s) ignored; those examples keep their previous score "
                "(a NaN or infinite loss or gradient: a diverging step, or a float16 overflow in a "
                f"step that GradScaler skips; {self._progress.nonfinite_scores} so far, see Pruner.stats)",
                SADPWarning,
                stacklevel=4,
            )
            index_array, values = index_array[finite], values[finite]
        return index_array, values

    def _check_indices(self, indices: Any) -> np.ndarray:
        array = to_numpy(indices, "indices")
        if array.ndim != 1:
            raise SADPError(f"indices must be one-dimensional, got shape {array.shape}")
        if array.dtype != np.int64:
            if array.dtype.kind not in "iu":
                raise SADPError(
                    f"indices must be integers, got dtype {array.dtype}; pass the indices the plan gave"
                )
            array = array.astype(np.int64)
        # one pass: negative indices become huge when read as unsigned
        if array.size and array.view(np.uint64).max() >= self._size:
            raise SADPError(
                f"indices must lie in [0, {self._size}), got values from "
                f"{array.min()} to {array.max()}; is num_examples the size of this dataset?"
            )
        return array

    # -- reporting ---------------------------------------------------------------------

    @property
    def stats(self) -> PrunerStats:
        """Share of examples processed so far and projected, theoretical speedup, counts."""
        progress, size, schedule = self._progress, self.num_examples, self.schedule
        if progress.pruned_epochs_planned:
            per_pruned_epoch = progress.pruned_examples_planned / progress.pruned_epochs_planned
        else:
            per_pruned_epoch = self.budget if self.method.prunes else size
        remaining = [schedule.phase(e) for e in range(progress.last_epoch + 1, schedule.epochs)]
        per_epoch = {"prune": per_pruned_epoch, "warmup": size}
        per_epoch["anneal"] = self.budget if self.method.partial_anneal else size
        projected = progress.examples_planned + sum(per_epoch[phase] for phase in remaining)
        projected_fraction = projected / (schedule.epochs * size)
        planned_epochs = progress.epochs_planned
        return PrunerStats(
            epochs_planned=planned_epochs,
            examples_planned=progress.examples_planned,
            processed_fraction=progress.examples_planned / (planned_epochs * size)
            if planned_epochs
            else math.nan,
            projected_fraction=projected_fraction,
            theoretical_speedup=1.0 / projected_fraction,
            nonfinite_scores=progress.nonfinite_scores,
            unscored_examples=int(np.isnan(self._table.latest).sum()),
        )

    # -- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: configuration, score table, progress, latest plan.

        Values are numpy arrays and plain Python numbers (fit for ``torch.save``,
        ``numpy.savez`` or pickle). A resumed Pruner draws the identical plan sequence.
        """
        plan = self._plan
        return {
            "version": _STATE_VERSION,
            "config": dict(self._config),
            "latest": self._table.latest.copy(),
            "mean": None if self._table.mean is None else self._table.mean.copy(),
            "variance": None if self._table.variance is None else self._table.variance.copy(),
            "progress": vars(self._progress).copy(),
            "plan": None if plan is None else {
                "epoch": plan.epoch, "phase": plan.phase, "indices": plan.indices.copy(),
                "weights": plan.weights.copy(), "probabilities": plan.probabilities.copy(),
            },
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a Pruner with the same configuration.

        Raises:
            SADPError: if the state is not a Pruner state, or was made for another dataset
                size, method, seed or schedule.
        """
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise SADPError("not a sadp_core Pruner state_dict (missing or unknown 'version')")
        config = state.get("config")
        if not isinstance(config, dict):
            raise SADPError("the state_dict has no config entry (a dict): save it again with state_dict()")
        differing = sorted(k for k in self._config if config.get(k) != self._config[k])
        if differing:
            details = ", ".join(f"{k}={config.get(k)!r} (here {self._config[k]!r})" for k in differing)
            raise SADPError(
                f"this state_dict was made with {details}; create the Pruner with the same settings"
            )
        size = self.num_examples
        names = ("latest", "mean", "variance") if self.method.keeps_history else ("latest",)
        arrays = {name: _host_copy(state.get(name), np.float64, name) for name in names}
        if any(array.shape != (size,) for array in arrays.values()):
            raise SADPError(f"the score tables in this state_dict do not have {size} entries")
        progress = _checked_progress(state.get("progress"))
        if "plan" not in state:
            raise SADPError("the state_dict has no plan entry (None if no plan was drawn)")
        plan = self._checked_plan(state["plan"], progress)
        # everything is checked: only now is anything replaced
        self._table = ScoreTable(**arrays)
        self._progress = progress
        self._plan = plan

    def _checked_plan(self, saved: Any, progress: _Progress) -> Plan | None:
        """The saved latest plan, checked against the schedule, ``N`` and ``progress``."""
        if saved is None:
            return None
        fields = ("epoch", "phase", "indices", "weights", "probabilities")
        if not isinstance(saved, dict) or any(name not in saved for name in fields):
            raise SADPError(f"the plan in this state_dict must be a dict with {', '.join(fields)}")
        epoch = _saved_int(saved["epoch"], "plan epoch")
        phase = self.schedule.phase(epoch)
        if saved["phase"] != phase or epoch != progress.last_epoch:
            raise SADPError(
                f"the plan in this state_dict is of epoch {epoch} ({saved['phase']!r}), but the schedule "
                f"says {phase!r} and the progress says the latest epoch is {progress.last_epoch}; "
                "the state_dict is corrupt: save it again with state_dict()"
            )
        indices = _host_copy(saved["indices"], np.float64, "plan indices")
        weights = _host_copy(saved["weights"], np.float64, "plan weights")
        probabilities = _host_copy(saved["probabilities"], np.float64, "plan probabilities")
        size = self.num_examples
        if (
            indices.ndim != 1
            or weights.shape != indices.shape
            or probabilities.shape != (size,)
            or not np.isfinite(indices).all()
            or (indices != np.round(indices)).any()
            or (indices.size and (indices.min() < 0 or indices.max() >= size))
            or not (np.isfinite(weights).all() and (weights > 0).all())
        ):
            raise SADPError(
                f"the plan in this state_dict is not a plan of {size} examples (indices in [0, {size}), "
                "one positive weight per index, N probabilities); save it again with state_dict()"
            )
        plan = Plan(epoch, phase, indices.astype(np.int64), weights, probabilities)
        for array in plan[2:]:
            array.flags.writeable = False
        return plan

    def __repr__(self) -> str:
        c = self._config
        return (
            f"Pruner(num_examples={c['num_examples']}, prune_ratio={c['prune_ratio']}, "
            f"epochs={c['epochs']}, seed={c['seed']}, method={c['method']!r})"
        )


def _saved_int(value: Any, name: str) -> int:
    """An integer of a saved state (a Python, numpy or 0-d torch integer; not a bool)."""
    if not isinstance(value, bool) and "bool" not in str(getattr(value, "dtype", "")):
        try:
            return operator.index(value)
        except (TypeError, ValueError, RuntimeError):
            pass
    raise SADPError(f"{name} in this state_dict must be an integer, got {value!r}")


def _checked_progress(saved: Any) -> _Progress:
    """The saved progress counters, checked: every field of :class:`_Progress`, integers."""
    fields = list(vars(_Progress()))
    if not isinstance(saved, dict) or sorted(saved) != sorted(fields):
        keys = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise SADPError(f"the progress in this state_dict must have the entries {fields}, got {keys}")
    values = {name: _saved_int(saved[name], f"progress {name}") for name in fields}
    if values["last_epoch"] < -1 or any(values[name] < 0 for name in fields if name != "last_epoch"):
        raise SADPError(f"the progress in this state_dict has negative counts: {values}")
    return _Progress(**values)


def _host_copy(array: Any, dtype: Any, name: str) -> np.ndarray:
    """A writable numpy copy of a saved array (numpy, torch, jax, ...) with ``dtype``."""
    if array is None:
        raise SADPError(f"the state_dict has no {name}")
    return np.array(to_numpy(array, name), dtype=dtype)
