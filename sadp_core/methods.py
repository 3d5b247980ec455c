"""Selection rules: SADP and the baselines it is measured against (DESIGN.md sections 3-4).

A method turns the score table into one epoch's selection: which examples to train on,
with which loss weights, and with which inclusion probabilities. The :class:`Pruner`
applies the schedule (warm-up and annealing epochs use all data) and shuffles the result.

Each method says which value ``Pruner.update`` expects (:attr:`Method.expects`):
``"bound"`` (the spike-aware gradient-norm bound, :func:`sadp_core.spike_aware_score`) or
``"loss"`` (the example's latest unweighted loss). The adapters supply the right one.

Length: about 520 lines, one short class per selection rule; they share the helpers at
the top, and the rules read best side by side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import numpy as np

from .errors import SADPError
from .sampling import (
    inclusion_probabilities,
    sample_with_replacement,
    systematic_sample,
)

__all__ = [
    "CORRECTIONS",
    "FIRST_STAGE",
    "METHODS",
    "EpsilonGreedy",
    "FullData",
    "ImportanceSampling",
    "InfoBatch",
    "Method",
    "ScoreTable",
    "SeTa",
    "Selection",
    "Stage",
    "UniformRandom",
    "UpperConfidenceBound",
    "loss_cluster_ranks",
    "make_method",
]

Expects = Literal["bound", "loss"]
Correction = Literal["unbiased", "annealed", "none"]
CORRECTIONS: tuple[str, ...] = ("unbiased", "annealed", "none")
"""How far the importance-sampling weights correct the sampler's bias (:class:`ImportanceSampling`)."""


class Stage(NamedTuple):
    """Where a pruned epoch lies in the schedule: pruned epoch ``number`` (0-based) of ``total``.

    Methods whose rule changes over training (SeTa's sliding window, SADP's annealed
    weight exponent) read it; the others ignore it.
    """

    number: int = 0
    total: int = 1

    @property
    def progress(self) -> float:
        """0 at the first pruned epoch, 1 at the last (0 when there is only one)."""
        return self.number / (self.total - 1) if self.total > 1 else 0.0


FIRST_STAGE = Stage()


@dataclass
class ScoreTable:
    """What a method knows about the examples: the latest score, and running statistics.

    ``latest[i]`` is NaN until example ``i`` is first scored. ``mean`` and ``variance`` are
    exponential moving averages of each example's scores, kept only for the methods that
    use them (UCB and epsilon-greedy); otherwise they are ``None``.
    """

    latest: np.ndarray
    mean: np.ndarray | None = None
    variance: np.ndarray | None = None

    @classmethod
    def empty(cls, size: int, history: bool = False) -> ScoreTable:
        if not history:
            return cls(np.full(size, np.nan))
        return cls(np.full(size, np.nan), np.full(size, np.nan), np.zeros(size))

    def record(self, indices: np.ndarray, values: np.ndarray, decay: float) -> None:
        """Store new scores (finite, non-negative, already validated)."""
        self.latest[indices] = values
        if self.mean is None or self.variance is None:
            return
        previous = self.mean[indices]
        first = np.isnan(previous)
        difference = np.where(first, 0.0, values - previous)
        self.mean[indices] = np.where(first, values, previous + (1 - decay) * difference)
        self.variance[indices] = decay * (self.variance[indices] + (1 - decay) * difference**2)

    def history(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, variance)``; only tables made with ``history=True`` keep them."""
        if self.mean is None or self.variance is None:
            raise RuntimeError("this score table keeps no moving averages (made with history=False)")
        return self.mean, self.variance

    def filled(self, values: np.ndarray) -> np.ndarray:
        """``values`` with never-scored examples given the largest known value (drawn soon)."""
        unscored = np.isnan(values)
        if not unscored.any():
            return values
        if unscored.all():
            return np.zeros_like(values)
        return np.where(unscored, np.nanmax(values), values)


@dataclass(frozen=True)
class Selection:
    """One epoch's kept examples, their loss weights, and the inclusion probabilities of all N.

    ``ordered`` says whether ``indices`` already come in the epoch's random order; if not,
    the :class:`~sadp_core.Pruner` puts them in that order before batching.
    """

    indices: np.ndarray
    weights: np.ndarray
    probabilities: np.ndarray
    ordered: bool = False


class Method(ABC):
    """Base of the selection rules."""

    prunes: ClassVar[bool] = True
    """False for the full-data method, which ignores the budget."""
    keeps_history: ClassVar[bool] = False
    """True for the methods that read the moving averages of the score table."""
    partial_anneal: ClassVar[bool] = False
    """True where the annealing epochs train on a uniform random ``K`` (SeTa's "partial
    annealing") instead of on all data."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The name accepted by ``Pruner(method=...)``."""

    @property
    @abstractmethod
    def expects(self) -> Expects:
        """Which value ``Pruner.update`` should receive, ``"bound"`` or ``"loss"``."""

    @abstractmethod
    def select(
        self,
        table: ScoreTable,
        budget: int,
        rng: np.random.Generator,
        order: np.ndarray,
        stage: Stage = FIRST_STAGE,
    ) -> Selection:
        """Choose this epoch's ``budget`` examples (roughly, for InfoBatch) from the table.

        ``rng`` is this epoch's random generator, ``order`` this epoch's random order
        of all examples (:class:`~sadp_core.ordering.EpochOrders`), and ``stage`` which of
        the pruned epochs this is.
        """


@dataclass(frozen=True)
class FullData(Method):
    """Every example, every epoch, weight 1: the reference that pruning is measured against."""

    name = "full"
    expects = "loss"
    prunes: ClassVar[bool] = False

    def select(
        self,
        table: ScoreTable,
        budget: int,
        rng: np.random.Generator,
        order: np.ndarray,
        stage: Stage = FIRST_STAGE,
    ) -> Selection:
        return Selection(order, np.ones(order.shape[0]), np.ones(order.shape[0]), ordered=True)


@dataclass(frozen=True)
class UniformRandom(Method):
    """Uniform random dynamic pruning: a fresh uniform sample of ``K`` examples each epoch.

    Raju et al., "Accelerating Deep Learning with Dynamic Data Pruning" (2021) found it
    beats static pruning. Weights are 1: ``K / (N * K/N)``.
    """

    name = "random"
    expects = "loss"

    def select(
        self,
        table: ScoreTable,
        budget: int,
        rng: np.random.Generator,
        order: np.ndarray,
        stage: Stage = FIRST_STAGE,
    ) -> Selection:
        size = order.shape[0]
        return Selection(order[:budget], np.ones(budget), np.full(size, budget / size), ordered=True)


@dataclass(frozen=True)
class ImportanceSampling(Method):
    """Sampling proportional to a score, reweighted to stay unbiased (SADP and ``"loss"``).

    ``"sadp"`` uses the spike-aware gradient-norm bound; ``"loss"`` the latest loss, with
    the same sampler. Scores are smoothed (``s + smoothing * mean(s)``), turned into
    inclusion probabilities by water-filling, and drawn by systematic PPS sampling; weights
    are Horvitz-Thompson ``K / (N * pi_i)``. With ``replacement=True``, ``K`` independent
    draws with ``p_i`` proportional to the smoothed score and weights ``1 / (N p_i)``.
    """

    score: Expects = "bound"
    smoothing: float = 0.1
    replacement: bool = False
    correction: Correction = "annealed"

    @property
    def name(self) -> str:
        return "sadp" if self.score == "bound" else "loss"

    @property
    def expects(self) -> Expects:
        return self.score

    def select(
        self,
        table: ScoreTable,
        budget: int,
        rng: np.random.Generator,
        order: np.ndarray,
        stage: Stage = FIRST_STAGE,
    ) -> Selection:
        scores = table.filled(table.latest)
        if self.replacement:
            chosen = self._with_replacement(scores, budget, rng)
            weights = self._corrected(chosen.weights, stage)
            return Selection(chosen.indices, weights, chosen.probabilities, ordered=True)
        probabilities = inclusion_probabilities(scores, budget, smoothing=self.smoothing)
        indices, kept = systematic_sample(
            probabilities, order, float(rng.random()), return_probabilities=True
        )
        weights = budget / (order.shape[0] * kept)  # Horvitz-Thompson, see horvitz_thompson_weights
        return Selection(indices, self._corrected(weights, stage), probabilities, ordered=True)

    def _corrected(self, weights: np.ndarray, stage: Stage) -> np.ndarray:
        """The Horvitz-Thompson weights raised to the exponent that ``correction`` sets."""
        if self.correction == "unbiased":
            return weights
        if self.correction == "none":
            return np.ones_like(weights)
        return weights**stage.progress  # "annealed": 0 at the first pruned epoch, 1 at the last

    def _with_replacement(self, scores: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        size = scores.shape[0]
        top = scores.max()
        smoothed = scores / top if top > 0 else np.ones_like(scores)
        smoothed = smoothed + self.smoothing * smoothed.mean()
        if smoothed.sum() <= 0:
            smoothed = np.ones_like(smoothed)
        draw = smoothed / smoothed.sum()
        uniforms = np.sort(rng.random(budget))  # sorted: a cache-friendly search
        indices = sample_with_replacement(draw, uniforms)[rng.permutation(budget)]
        weights = 1.0 / (size * draw[indices])
        return Selection(indices, weights, -np.expm1(budget * np.log1p(-draw)), ordered=True)


@dataclass(frozen=True)
class InfoBatch(Method):
    """InfoBatch (Qin et al., "InfoBatch: Lossless Training Speed Up by Unbiased Dynamic
    Data Pruning", ICLR 2024), from its published description.

    Score = the example's latest loss. Examples with a score at or above the mean are all
    kept with weight 1; of the "well-learned" ones below the mean, a random ``1 - r`` share
    is kept and upscaled by the inverse of that share (the paper's ``1 / (1 - r)``, here
    the exact ``n_low / k_low`` so that the rescaling is unbiased for the rounded count).
    It processes more than ``(1 - r) N`` examples per epoch; never-scored examples count
    as high-loss and are kept.
    """

    name = "infobatch"
    expects = "loss"
    prune_ratio: float = 0.5

    def select(
        self,
        table: ScoreTable,
        budget: int,
        rng: np.random.Generator,
        order: np.ndarray,
        stage: Stage = FIRST_STAGE,
    ) -> Selection:
        scores = table.filled(table.latest)
        size = scores.shape[0]
        low = np.flatnonzero(scores < scores.mean())
        high = np.flatnonzero(scores >= scores.mean())
        kept_low_count = round((1 - self.prune_ratio) * low.shape[0])
        kept_low = rng.permutation(low)[:kept_low_count]
        probabilities = np.ones(size)
        if low.shape[0]:
            probabilities[low] = kept_low_count / low.shape[0]
        upscale = low.shape[0] / kept_low_count if kept_low_count else 1.0
        indices = np.concatenate([high, kept_low])
        weights = np.concatenate([np.ones(high.shape[0]), np.full(kept_low_count, upscale)])
        return Selection(indices, weights, probabilities)


@dataclass(frozen=True)
class UpperConfidenceBound(Method):
    """UCB pruning (Raju et al., "Accelerating Deep Learning with Dynamic Data Pruning", 2021).

    Each example is an arm whose reward is its loss. The method keeps an exponential moving
    average of each example's loss and of its variance (``decay``) and trains on the ``K``
    examples with the largest ``mean + c * std``; ties are broken at random. Weights are 1
    (the published method does not reweight, so its gradient is biased).
    """

    name = "ucb"
    expects = "loss"
    keeps_history = True
    exploration: float = 1.0
    decay: float = 0.9

    def select(
        self,
        table: ScoreTable,
        budget: int,
        rng: np.random.Generator,
        order: np.ndarray,
        stage: Stage = FIRST_STAGE,
    ) -> Selection:
        mean, variance = table.history()
        bound = table.filled(mean + self.exploration * np.sqrt(variance))
        return _top(bound, budget, rng)


@dataclass(frozen=True)
class EpsilonGreedy(Method):
    """Epsilon-greedy pruning (Raju et al., 2021): exploit and explore.

    A share ``1 - epsilon`` of the budget goes to the examples with the largest moving
    average loss; the remaining ``epsilon * K`` are drawn uniformly from all the others.
    Weights are 1, as published.
    """

    name = "eps_greedy"
    expects = "loss"
    keeps_history = True
    epsilon: float = 0.1
    decay: float = 0.9

    def select(
        self,
        table: ScoreTable,
        budget: int,
        rng: np.random.Generator,
        order: np.ndarray,
        stage: Stage = FIRST_STAGE,
    ) -> Selection:
        size = table.latest.shape[0]
        greedy_count = round((1 - self.epsilon) * budget)
        greedy = _top(table.filled(table.history()[0]), greedy_count, rng)
        others = np.setdiff1d(np.arange(size), greedy.indices, assume_unique=True)
        explored = rng.permutation(others)[: budget - greedy_count]
        probabilities = greedy.probabilities
        if others.shape[0]:
            probabilities[others] = (budget - greedy_count) / others.shape[0]
        indices = np.concatenate([greedy.indices, explored])
        return Selection(indices, np.ones(budget), probabilities)


@dataclass(frozen=True)
class SeTa(Method):
    """SeTa (Zhou et al., "Scale Efficient Training for Large Datasets", CVPR 2025), from its
    published description, sized to the budget.

    Each pruned epoch: (1) a uniform random subset of ``M = min(N, K / window)`` examples
    (removes redundancy); (2) 1-D k-means of their latest losses into ``groups`` clusters,
    ranked from easy (low loss) to hard; (3) a window of ``round(window * groups)`` clusters
    that slides one cluster towards the hard end each pruned epoch and starts again from the
    easy end when it reaches the hardest cluster (the first pruned epoch takes a uniform
    share of the subset instead, as the paper's first iteration takes every cluster). The
    ``K`` examples are taken from the window's first cluster onwards, the last cluster in
    part, so that every pruned epoch processes exactly ``K`` (the paper's window holds a
    varying number; here the nominal ratio is the share processed, as for the other
    methods). Weights are 1. The annealing epochs train on a uniform random ``K``
    ("partial annealing"), not on all data.

    ``probabilities`` are estimates: ``K`` shared equally among all examples whose loss
    lies in the range of the examples taken, 0 elsewhere (they sum to ``K``).
    """

    name = "seta"
    expects = "loss"
    partial_anneal: ClassVar[bool] = True
    groups: int = 10
    window: float = 0.5

    def select(
        self,
        table: ScoreTable,
        budget: int,
        rng: np.random.Generator,
        order: np.ndarray,
        stage: Stage = FIRST_STAGE,
    ) -> Selection:
        scores = table.filled(table.latest)
        size = scores.shape[0]
        subset = order[: min(size, max(budget, round(budget / self.window)))]
        if stage.number == 0 or subset.shape[0] == budget:
            taken = subset[:budget]
        else:
            ranks = loss_cluster_ranks(scores[subset], self.groups)
            width = max(1, round(self.groups * self.window))
            start = stage.number % (self.groups - width + 1)
            by_rank = np.argsort(ranks, kind="stable")  # easy to hard; within a cluster, in random order
            first = min(int(np.searchsorted(ranks[by_rank], start)), subset.shape[0] - budget)
            taken = subset[by_rank[first : first + budget]]
        return Selection(taken, np.ones(budget), _interval_probabilities(scores, taken))


def loss_cluster_ranks(values: np.ndarray, groups: int, iterations: int = 25) -> np.ndarray:
    """For each value, the rank (0 = lowest centre) of its cluster in a 1-D k-means.

    Lloyd's algorithm from the ``groups`` quantiles; in one dimension each cluster is an
    interval, so assignment is a search among the midpoints of the sorted centres.
    Fewer distinct values than ``groups`` give fewer clusters.

    >>> loss_cluster_ranks(np.array([0.1, 0.2, 5.0, 5.1, 9.0]), 3).tolist()
    [0, 0, 1, 1, 2]
    """
    distinct = np.unique(values)
    count = min(groups, distinct.shape[0])
    centres = np.unique(np.quantile(values, (np.arange(count) + 0.5) / count))
    for _ in range(iterations):
        labels = np.searchsorted((centres[1:] + centres[:-1]) / 2, values)
        sums = np.bincount(labels, weights=values, minlength=centres.shape[0])
        counts = np.bincount(labels, minlength=centres.shape[0])
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        updated = np.unique(updated)
        if updated.shape == centres.shape and np.allclose(updated, centres, rtol=0, atol=0):
            break
        centres = updated
    return np.searchsorted((centres[1:] + centres[:-1]) / 2, values)


def _interval_probabilities(scores: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """SeTa's estimated inclusion probabilities (see :class:`SeTa`)."""
    low, high = scores[taken].min(initial=np.inf), scores[taken].max(initial=-np.inf)
    in_range = (scores >= low) & (scores <= high)
    return np.where(in_range, taken.shape[0] / max(1, int(np.count_nonzero(in_range))), 0.0)


METHODS: tuple[str, ...] = ("sadp", "loss", "full", "random", "infobatch", "ucb", "eps_greedy", "seta")
"""The names accepted by ``Pruner(method=...)``."""


def make_method(
    name: str,
    *,
    prune_ratio: float,
    smoothing: float = 0.1,
    replacement: bool = False,
    exploration: float = 1.0,
    epsilon: float = 0.1,
    decay: float = 0.9,
    correction: str = "annealed",
) -> Method:
    """The method called ``name`` (one of :data:`METHODS`) with its options checked."""
    if correction not in CORRECTIONS:
        raise SADPError(f"correction must be one of {', '.join(map(repr, CORRECTIONS))}, got {correction!r}")
    _check_fraction("smoothing", smoothing, upper=None)
    _check_fraction("epsilon", epsilon, upper=1.0)
    _check_fraction("decay", decay, upper=1.0)
    _check_fraction("exploration", exploration, upper=None)
    if name == "sadp":
        return ImportanceSampling("bound", smoothing, replacement, correction)  # type: ignore[arg-type]
    if name == "loss":
        return ImportanceSampling("loss", smoothing, replacement, correction)  # type: ignore[arg-type]
    if name == "full":
        return FullData()
    if name == "random":
        return UniformRandom()
    if name == "infobatch":
        return InfoBatch(prune_ratio)
    if name == "ucb":
        return UpperConfidenceBound(exploration, decay)
    if name == "eps_greedy":
        return EpsilonGreedy(epsilon, decay)
    if name == "seta":
        return SeTa()
    raise SADPError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")


def _top(values: np.ndarray, count: int, rng: np.random.Generator) -> Selection:
    """The ``count`` largest values (ties broken at random) with probability 1, others 0."""
    size = values.shape[0]
    order = rng.permutation(size)  # random tie-breaking
    probabilities = np.zeros(size)
    if count == 0:
        return Selection(order[:0], np.ones(0), probabilities)
    chosen = order[np.argpartition(-values[order], count - 1)[:count]] if count < size else order
    probabilities[chosen] = 1.0
    return Selection(chosen, np.ones(count), probabilities)


def _check_fraction(name: str, value: object, upper: float | None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < 0 or (upper is not None and value > upper):  # type: ignore[operator]
        bound = f"[0, {upper}]" if upper is not None else ">= 0"
        raise SADPError(f"{name} must be a number {bound}, got {value!r}")
