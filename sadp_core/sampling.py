r"""Inclusion probabilities, fixed-size sampling and unbiased weights (DESIGN.md section 3).

The pipeline for one pruning epoch with budget ``K``:

1. :func:`inclusion_probabilities`: smooth the scores, then water-fill
   ``pi_i = min(1, c * s_i)`` with ``sum(pi) = K``.
2. :func:`systematic_sample`: draw exactly ``K`` distinct examples, each with probability
   exactly ``pi_i`` (systematic PPS sampling over a random order).
3. :func:`horvitz_thompson_weights`: ``w_i = K / (N * pi_i)``, so that the weighted
   batch-mean loss over the kept examples is an unbiased estimate of the full-data mean.

These are pure functions: randomness comes in as arguments (a permutation and an offset),
so they are deterministic and run on any Array API library.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ._array import Array, as_floating, concrete_any, namespace
from .errors import SADPError

__all__ = [
    "CERTAINTY_TOLERANCE",
    "horvitz_thompson_weights",
    "inclusion_probabilities",
    "sample_with_replacement",
    "systematic_sample",
]

CERTAINTY_TOLERANCE = 1e-6
"""Probabilities within this distance of 1 are rounded to 1 (the example is always kept).

This keeps every sampled interval of the systematic draw shorter than 1 even after
floating-point rounding, which is what guarantees exactly ``K`` distinct examples.
"""

_QUICK_ROUNDS = 64


def inclusion_probabilities(scores: Array, budget: int, *, smoothing: float = 0.0, xp: Any = None) -> Array:
    """Inclusion probabilities proportional to the scores, capped at 1, summing to ``budget``.

    Args:
        scores: ``[N]`` non-negative, finite scores (larger = more important).
        budget: ``K``, the number of examples to keep, ``0 <= K <= N``.
        smoothing: ``lambda >= 0``; the scores used are ``s + lambda * mean(s)``, which gives
            every example a floor and turns all-equal scores into uniform sampling.
        xp: Array API namespace; inferred from ``scores`` when omitted.

    Returns:
        ``[N]`` probabilities ``pi`` in ``[0, 1]`` with ``sum(pi) = K``; ``pi_i = c * s_i`` for
        some ``c``, except where that exceeds ``1 - CERTAINTY_TOLERANCE`` (then ``pi_i = 1``).
        If fewer than ``K`` scores are positive, the zero-score examples share the rest of
        the budget equally; all-zero scores give ``K / N`` each.

    Example:
        >>> import numpy as np
        >>> inclusion_probabilities(np.array([8.0, 1.0, 1.0, 2.0]), 2).tolist()
        [1.0, 0.25, 0.25, 0.5]
        >>> inclusion_probabilities(np.zeros(4), 1).tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    xp = namespace(scores, xp=xp)
    scores = as_floating(scores, xp, "scores")
    size = _check_vector(scores, "scores")
    budget = _check_budget(budget, size)
    if not (isinstance(smoothing, (int, float)) and math.isfinite(smoothing) and smoothing >= 0):
        raise SADPError(f"smoothing must be a finite number >= 0, got {smoothing!r}")
    if concrete_any(~xp.isfinite(scores)):
        raise SADPError("scores must be finite; drop or replace NaN and inf before sampling")
    if concrete_any(scores < 0):
        raise SADPError("scores must be >= 0 (they are gradient-norm bounds or losses)")
    if budget == size:
        return xp.ones_like(scores)
    if budget == 0:
        return xp.zeros_like(scores)

    top = xp.max(scores)
    if float(top) > 0:
        scores = scores / top  # scale-free: avoids overflow for scores near the float limit
    if smoothing > 0:
        scores = scores + smoothing * xp.mean(scores)
    else:
        positive = int(xp.count_nonzero(scores))
        if positive <= budget:
            share = (budget - positive) / (size - positive)
            return xp.where(scores > 0, xp.ones_like(scores), xp.full_like(scores, share))
    if float(top) == 0:  # all zero: uniform
        return xp.full_like(scores, budget / size)

    fill = _water_fill(scores, budget, xp)
    probabilities = fill.scale * scores
    return xp.where(scores >= fill.threshold, xp.asarray(1.0, dtype=scores.dtype), probabilities)


class _Fill(NamedTuple):
    threshold: float  # examples with a score at or above it are certain (pi = 1)
    scale: float  # c: pi = c * s for all the others


def _water_fill(scores: Array, budget: int, xp: Any) -> _Fill:
    """Find the certainty threshold ``t`` and the scale ``c`` of the water-filling.

    The certain examples are always those with the largest scores, ``s >= t``, and
    ``c = (K - #certain) / sum(other scores)``. Starting from ``t = inf``, each round lowers
    ``t`` to ``(1 - tol) / c``, which raises ``c``; the rounds end at the unique fixed point.
    Very skewed scores, which move ``t`` past few examples a round, jump to the answer read
    off the sorted scores after ``_QUICK_ROUNDS`` rounds.
    """
    threshold, count, rest = math.inf, 0, float(xp.sum(scores))
    size = int(scores.shape[0])
    for rounds in range(1, size + 2):
        scale = (budget - count) / rest
        if scale == 0:  # the certain examples fill the budget
            return _Fill(threshold, scale)
        lowered = (
            (1 - CERTAINTY_TOLERANCE) / scale
            if rounds != _QUICK_ROUNDS
            else _sorted_threshold(scores, budget, xp)
        )
        uncertain = scores < lowered
        grown = size - int(xp.count_nonzero(uncertain))
        if grown == count and rounds != _QUICK_ROUNDS:
            return _Fill(lowered, scale)
        threshold, count = lowered, grown
        rest = float(xp.vecdot(scores, xp.astype(uncertain, scores.dtype)))  # sum of the others
    raise RuntimeError("water-filling did not converge")  # unreachable: one example per round at least


def _sorted_threshold(scores: Array, budget: int, xp: Any) -> float:
    """The fixed-point threshold read off the sorted scores: O(N log N), a shortcut."""
    ordered = xp.sort(scores, descending=True)
    tails = xp.sum(ordered) - xp.cumulative_sum(ordered) + ordered  # sum of ordered[m:]
    heads = xp.arange(budget, dtype=scores.dtype)
    fits = (budget - heads) * ordered[:budget] < (1 - CERTAINTY_TOLERANCE) * tails[:budget]
    first_fit = int(xp.argmax(xp.astype(fits, xp.int8)))
    return math.inf if first_fit == 0 else float(ordered[first_fit - 1])


def systematic_sample(
    probabilities: Array, order: Array, offset: float, *, return_probabilities: bool = False, xp: Any = None
) -> Any:
    """Draw exactly ``K = sum(pi)`` distinct examples, example ``i`` with probability ``pi_i``.

    Systematic PPS sampling: examples with ``pi = 1`` are always taken; the others are laid
    out in the random ``order`` as consecutive intervals of length ``pi_i``, and the points
    ``u + j`` in ``(0, K']`` pick the intervals they fall in. Since every interval is
    shorter than 1, no example is picked twice. With ``order`` a uniform random
    permutation and ``offset`` uniform on ``[0, 1)``, each example is included with
    probability ``pi_i`` (exactly, but for the rounding of ``u`` to a grid of
    ``2**-(52 - log2 K)``: below ``2e-9`` for ``K`` up to ten million).

    Args:
        probabilities: ``[N]`` inclusion probabilities in ``[0, 1]`` whose sum is an integer
            ``K`` (as :func:`inclusion_probabilities` returns).
        order: ``[N]`` a permutation of ``0..N-1`` (the randomness of the draw).
        offset: ``u`` in ``[0, 1)`` (the other randomness).
        return_probabilities: also return the inclusion probabilities of the kept examples
            (cheaper than gathering them from ``probabilities`` afterwards).
        xp: Array API namespace; inferred from ``probabilities`` when omitted.

    Returns:
        ``[K]`` integer indices of the kept examples in the given order: with a random
        ``order`` they come out shuffled, ready to be cut into batches. With
        ``return_probabilities``, the pair ``(indices, probabilities[indices])``.

    Example:
        >>> import numpy as np
        >>> pi = np.array([1.0, 0.5, 0.5, 0.0])
        >>> systematic_sample(pi, order=np.array([3, 2, 1, 0]), offset=0.25).tolist()
        [2, 0]
    """
    xp = namespace(probabilities, order, xp=xp)
    probabilities = as_floating(probabilities, xp, "probabilities")
    size = _check_vector(probabilities, "probabilities")
    if tuple(order.shape) != (size,) or not xp.isdtype(order.dtype, "integral"):
        raise SADPError(f"order must be an integer permutation of length {size}, got {order.shape}")
    if not 0.0 <= offset < 1.0:
        raise SADPError(f"offset must lie in [0, 1), got {offset!r}")
    if not (float(xp.min(probabilities)) >= 0 and float(xp.max(probabilities)) <= 1):  # NaN fails too
        raise SADPError("probabilities must lie in [0, 1]")
    total = float(xp.sum(probabilities))
    budget = round(total)
    if abs(total - budget) > 1e-6 * max(1.0, total):
        raise SADPError(
            f"probabilities sum to {total:.9g}, not a whole number of examples; "
            "a fixed-size draw needs sum(pi) = K (use inclusion_probabilities)"
        )
    remaining = budget - int(xp.count_nonzero(probabilities >= 1 - CERTAINTY_TOLERANCE))
    # u on a grid of 2**-(52 - bits(K')): K' - u is exact in float64, so at most K' points
    # lie in (0, K'], and each inclusion probability is off by at most that grid step
    grid = 2.0 ** (52 - remaining.bit_length())
    walk = _SystematicWalk(remaining, math.floor(offset * grid) / grid)
    indices, kept = [], []
    for start in range(0, size, _CHUNK):  # in chunks: small temporaries, reused memory
        chunk = order[start : min(start + _CHUNK, size)]
        chunk_probabilities = xp.take(probabilities, chunk)
        positions = walk.step(chunk_probabilities, start, xp)
        indices.append(xp.take(chunk, positions))
        kept.append(xp.take(chunk_probabilities, positions))
    if walk.picked < remaining:  # rounding left the last point past the last interval's end
        indices.append(order[walk.last_positive : walk.last_positive + 1])
        kept.append(xp.take(probabilities, indices[-1]))
    indices_array = xp.concat(indices) if indices else order
    return (
        (indices_array, xp.concat(kept) if kept else probabilities) if return_probabilities else indices_array
    )


_CHUNK = 1 << 20


class _SystematicWalk:
    """The running state of a systematic draw over consecutive chunks of the ordered examples.

    Certain examples (``pi >= 1 - tol``) are always picked and take no room; every other
    example owns an interval ``(a, b]`` of length ``pi``, laid end to end from 0, and is
    picked when a point ``u + j`` falls in it. The number of points in ``(0, b]`` is
    ``floor(b - u) - floor(-u)``, so an example is picked when ``floor(b - u)`` steps up.
    """

    def __init__(self, points: int, offset: float) -> None:
        self.points, self.offset = points, offset
        self.end = 0.0  # where the intervals laid so far end
        self.passed = float(math.floor(-offset))  # floor(end - u)
        self.picked = 0  # uncertain examples picked so far
        self.last_positive = -1  # position in the order of the last interval of positive length

    def step(self, probabilities: Array, start: int, xp: Any) -> Array:
        """Positions (within this chunk) of the examples picked from it."""
        certain = probabilities >= 1 - CERTAINTY_TOLERANCE
        lengths = xp.where(certain, 0.0, probabilities)
        ends = xp.minimum(
            self.end + xp.cumulative_sum(lengths), xp.asarray(float(self.points), dtype=lengths.dtype)
        )
        passed = xp.floor(ends - self.offset)
        steps_up = xp.concat([xp.asarray([float(passed[0]) > self.passed]), passed[1:] > passed[:-1]])
        positive = xp.nonzero(lengths > 0)[0]
        if positive.shape[0]:
            self.last_positive = start + int(positive[-1])
        self.picked += int(xp.count_nonzero(steps_up))
        self.end, self.passed = float(ends[-1]), float(passed[-1])
        return xp.nonzero(steps_up | certain)[0]


def sample_with_replacement(probabilities: Array, uniforms: Array, *, xp: Any = None) -> Array:
    """Draw ``len(uniforms)`` examples with replacement, example ``i`` with probability ``p_i``.

    Args:
        probabilities: ``[N]`` non-negative draw probabilities (normalised here).
        uniforms: ``[K]`` independent uniforms on ``[0, 1)`` (the randomness of the draw).
        xp: Array API namespace; inferred from ``probabilities`` when omitted.

    Returns:
        ``[K]`` integer indices, possibly repeated. The unbiased weight of a draw of example
        ``i`` is ``1 / (N p_i)``.

    Example:
        >>> import numpy as np
        >>> sample_with_replacement(np.array([0.5, 0.0, 0.5]), np.array([0.1, 0.9, 0.4])).tolist()
        [0, 2, 0]
    """
    xp = namespace(probabilities, uniforms, xp=xp)
    probabilities = as_floating(probabilities, xp, "probabilities")
    size = _check_vector(probabilities, "probabilities")
    if concrete_any((probabilities < 0) | ~xp.isfinite(probabilities)) or float(xp.sum(probabilities)) <= 0:
        raise SADPError("probabilities must be finite, >= 0, and not all zero")
    cumulative = xp.cumulative_sum(probabilities / xp.sum(probabilities))
    picked = xp.searchsorted(cumulative, xp.astype(uniforms, cumulative.dtype), side="right")
    return xp.clip(picked, 0, size - 1)


def horvitz_thompson_weights(probabilities: Array, indices: Array, budget: int, *, xp: Any = None) -> Array:
    """Loss weights ``w_i = K / (N * pi_i)`` of the kept examples.

    With these weights, the mean of ``w_i * loss_i`` over the ``K`` kept examples is an
    unbiased estimate of the mean loss over all ``N`` examples, and the weights sum to ``K``
    on average, so the learning rate needs no change.

    Args:
        probabilities: ``[N]`` inclusion probabilities of all examples.
        indices: ``[K]`` kept examples (each must have ``pi > 0``).
        budget: ``K``.
        xp: Array API namespace; inferred from ``probabilities`` when omitted.

    Example:
        >>> import numpy as np
        >>> pi = np.array([1.0, 0.5, 0.5])
        >>> horvitz_thompson_weights(pi, np.array([0, 2]), 2).round(4).tolist()
        [0.6667, 1.3333]
    """
    xp = namespace(probabilities, indices, xp=xp)
    size = _check_vector(probabilities, "probabilities")
    kept = xp.take(as_floating(probabilities, xp, "probabilities"), indices)
    if concrete_any(kept <= 0):
        raise SADPError("an index with inclusion probability 0 cannot be kept; check the indices")
    return budget / (size * kept)


def _check_vector(x: Array, name: str) -> int:
    if x.ndim != 1:
        raise SADPError(f"{name} must be one-dimensional [N], got shape {tuple(x.shape)}")
    return int(x.shape[0])


def _check_budget(budget: Any, size: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or not 0 <= budget <= size:
        raise SADPError(f"budget must be an integer in [0, {size}], got {budget!r}")
    return budget


def _count(mask: Array, xp: Any) -> int:
    return int(xp.sum(xp.astype(mask, xp.int64)))
