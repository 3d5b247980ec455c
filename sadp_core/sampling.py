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
from typing import Any

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
    positive = int(xp.sum(xp.astype(scores > 0, xp.int64)))
    if positive <= budget:
        share = (budget - positive) / (size - positive)
        return xp.where(scores > 0, xp.ones_like(scores), xp.full_like(scores, share))

    nobody = xp.zeros_like(scores, dtype=xp.bool)
    certain, converged = _water_fill(scores, budget, xp, start=nobody, max_rounds=_QUICK_ROUNDS)
    if not converged:  # very skewed scores: continue from the exact sorted solution
        certain, _ = _water_fill(scores, budget, xp, start=_sorted_guess(scores, budget, xp))
    scale = (budget - _count(certain, xp)) / xp.sum(xp.where(certain, 0.0, scores))
    return xp.where(certain, xp.ones_like(scores), xp.minimum(scale * scores, xp.ones_like(scores)))


def _water_fill(
    scores: Array, budget: int, xp: Any, start: Array, max_rounds: int | None = None
) -> tuple[Array, bool]:
    """Grow the set of certain examples until ``c * s < 1 - tol`` holds for all others.

    Each round raises ``c``, so the set only grows and the loop ends at the unique fixed
    point. Returns ``(certain, converged)``; ``converged`` is False only when ``max_rounds``
    ran out first.
    """
    certain, count, rounds = start, _count(start, xp), 0
    while max_rounds is None or rounds < max_rounds:
        scale = (budget - count) / xp.sum(xp.where(certain, 0.0, scores))
        grown = certain | (scale * scores >= 1 - CERTAINTY_TOLERANCE)
        grown_count = _count(grown, xp)
        if grown_count == count:
            return certain, True
        certain, count, rounds = grown, grown_count, rounds + 1
    return certain, False


def _sorted_guess(scores: Array, budget: int, xp: Any) -> Array:
    """The certain set read off the sorted scores: O(N log N), used only as a warm start."""
    ordered = xp.sort(scores, descending=True)
    tails = xp.sum(ordered) - xp.cumulative_sum(ordered) + ordered  # sum of ordered[m:]
    heads = xp.arange(budget, dtype=scores.dtype)
    fits = (budget - heads) * ordered[:budget] < (1 - CERTAINTY_TOLERANCE) * tails[:budget]
    first_fit = int(xp.argmax(xp.astype(fits, xp.int8)))
    if first_fit == 0:
        return xp.zeros_like(scores, dtype=xp.bool)
    return scores >= ordered[first_fit - 1]


def systematic_sample(probabilities: Array, order: Array, offset: float, *, xp: Any = None) -> Array:
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
        xp: Array API namespace; inferred from ``probabilities`` when omitted.

    Returns:
        ``[K]`` integer indices of the kept examples, certain ones first, then the others
        in the given order (shuffle them before batching).

    Example:
        >>> import numpy as np
        >>> pi = np.array([1.0, 0.5, 0.5, 0.0])
        >>> systematic_sample(pi, order=np.array([3, 2, 1, 0]), offset=0.25).tolist()
        [0, 2]
    """
    xp = namespace(probabilities, order, xp=xp)
    probabilities = as_floating(probabilities, xp, "probabilities")
    size = _check_vector(probabilities, "probabilities")
    if tuple(order.shape) != (size,) or not xp.isdtype(order.dtype, "integral"):
        raise SADPError(f"order must be an integer permutation of length {size}, got {order.shape}")
    if not 0.0 <= offset < 1.0:
        raise SADPError(f"offset must lie in [0, 1), got {offset!r}")
    if concrete_any((probabilities < 0) | (probabilities > 1) | ~xp.isfinite(probabilities)):
        raise SADPError("probabilities must lie in [0, 1]")
    total = float(xp.sum(probabilities))
    budget = round(total)
    if abs(total - budget) > 1e-6 * max(1.0, total):
        raise SADPError(
            f"probabilities sum to {total:.9g}, not a whole number of examples; "
            "a fixed-size draw needs sum(pi) = K (use inclusion_probabilities)"
        )
    certain = probabilities >= 1 - CERTAINTY_TOLERANCE
    certain_indices = xp.nonzero(certain)[0]
    remaining = budget - int(certain_indices.shape[0])
    certain_indices = xp.astype(certain_indices, order.dtype)
    if remaining == 0:
        return certain_indices
    # the rest: intervals (a_i, b_i] of length pi_i laid out in `order`, and the points u + j
    ordered = xp.take(xp.where(certain, 0.0, probabilities), order)
    ends = xp.minimum(xp.cumulative_sum(ordered), xp.asarray(float(remaining)))
    # absorb rounding: the last interval of positive length ends exactly at K'
    last = int(xp.max(xp.nonzero(ordered > 0)[0]))
    ends = xp.where(xp.arange(size) >= last, xp.asarray(float(remaining)), ends)
    # u on a grid of 2**-(52 - bits(K')): K' - u is exact in float64, so exactly K' points
    # lie in (0, K'], and each inclusion probability is off by at most that grid step
    grid = 2.0 ** (52 - remaining.bit_length())
    offset = math.floor(offset * grid) / grid
    points_passed = xp.floor(ends - offset)  # points u + j in (0, end]; zero-length intervals get none
    starts = xp.concat([xp.asarray([math.floor(-offset)], dtype=ends.dtype), points_passed[:-1]])
    picked = xp.take(order, xp.nonzero(points_passed > starts)[0])
    return xp.concat([certain_indices, picked])


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
