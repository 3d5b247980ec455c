"""Inclusion probabilities, the systematic draw and unbiased weights (DESIGN.md section 3).

Statistical checks use seeded draws and a tolerance of a few standard errors of the
estimated quantity, so they can fail when the sampler is wrong and do not flake.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sadp_core import (
    SADPError,
    horvitz_thompson_weights,
    inclusion_probabilities,
    sample_with_replacement,
    systematic_sample,
)
from sadp_core.sampling import CERTAINTY_TOLERANCE

# scores spanning 1e-30 .. 1e30 with exact zeros mixed in
wide_scores = st.lists(
    st.one_of(st.just(0.0), st.floats(1e-30, 1e30), st.floats(0.0, 10.0)), min_size=1, max_size=60
)


def draws_for(xp) -> int:
    """Statistical repetitions: many on numpy, fewer where each call is slow (the tolerance follows)."""
    return 20_000 if xp.__name__.endswith("numpy") and "jax" not in xp.__name__ else 2_000


@settings(max_examples=150, deadline=None)
@given(values=wide_scores, data=st.data())
def test_probabilities_are_capped_proportional_and_sum_to_budget(xp, to_np, values, data):
    scores = np.array(values)
    budget = data.draw(st.integers(0, scores.size), label="budget")
    smoothing = data.draw(st.sampled_from([0.0, 0.1, 1.0]), label="smoothing")
    pi = to_np(inclusion_probabilities(xp.asarray(scores), budget, smoothing=smoothing))

    assert pi.shape == scores.shape
    assert np.all((pi >= 0) & (pi <= 1))
    assert abs(pi.sum() - budget) <= 1e-9 * max(1, budget)
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(pi[order]) >= -1e-12), "probabilities must not decrease as the score grows"
    if smoothing > 0 and budget > 0:
        assert np.all(pi > 0), "smoothing gives every example a positive probability"
    # proportional to full float64 precision where no subnormal number is involved: pi itself,
    # or the score over the largest score (inclusion_probabilities divides by it first)
    tiny = np.finfo(np.float64).tiny
    uncapped = (pi < 1) & (pi >= tiny) & (scores >= tiny * scores.max())
    if uncapped.sum() >= 2 and scores[uncapped].min() > 0:
        ratio = pi[uncapped] / (scores[uncapped] + smoothing * np.mean(scores / scores.max()) * scores.max())
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)


def test_all_zero_and_constant_scores_give_uniform_probabilities(xp, to_np):
    for scores in (np.zeros(10), np.full(10, 3.5), np.full(10, 1e-30)):
        for smoothing in (0.0, 0.5):
            pi = to_np(inclusion_probabilities(xp.asarray(scores), 4, smoothing=smoothing))
            np.testing.assert_allclose(pi, 0.4, rtol=1e-12)


def test_few_positive_scores_share_the_rest_of_the_budget(xp, to_np):
    pi = to_np(inclusion_probabilities(xp.asarray(np.array([5.0, 0.0, 0.0, 2.0, 0.0])), 3))
    np.testing.assert_allclose(pi, [1.0, 1 / 3, 1 / 3, 1.0, 1 / 3])


def test_probabilities_near_one_are_rounded_to_certain(xp, to_np):
    # c * s just below 1: within the tolerance the example is certain
    scores = np.array([1.0 - CERTAINTY_TOLERANCE / 4, 1.0, 0.5, 0.5])
    pi = to_np(inclusion_probabilities(xp.asarray(scores), 3))
    np.testing.assert_allclose(pi, [1.0, 1.0, 0.5, 0.5])


def test_skewed_scores_use_the_sorted_warm_start(xp, to_np):
    """Geometric scores force many water-filling rounds; the result is still exact."""
    scores = np.concatenate([1.5 ** -np.arange(200.0), np.full(800, 1e-9)])
    pi = to_np(inclusion_probabilities(xp.asarray(scores), 300))
    certain = pi == 1
    assert abs(pi.sum() - 300) < 1e-9
    rest = ~certain
    np.testing.assert_allclose(pi[rest] / scores[rest], (pi[rest] / scores[rest])[0], rtol=1e-9)
    assert scores[rest].max() <= scores[certain].min()


@settings(max_examples=150, deadline=None)
@given(values=wide_scores, data=st.data())
def test_a_draw_has_exactly_budget_distinct_indices(xp, to_np, values, data):
    scores = np.array(values)
    budget = data.draw(st.integers(0, scores.size), label="budget")
    pi = inclusion_probabilities(xp.asarray(scores), budget, smoothing=data.draw(st.sampled_from([0.0, 0.5])))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    offset = data.draw(st.sampled_from([0.0, 1 - 2**-53, float(rng.random())]), label="offset")
    picked = to_np(systematic_sample(pi, xp.asarray(rng.permutation(scores.size)), offset))
    assert picked.shape == (budget,)
    assert np.unique(picked).size == budget
    assert np.all(to_np(pi)[picked] > 0)


def test_inclusion_frequencies_match_probabilities(xp, to_np):
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.lognormal(0.0, 1.5, size=38), [0.0, 0.0], [40.0, 90.0]])
    pi = inclusion_probabilities(xp.asarray(scores), 15, smoothing=0.1)
    pi_np = to_np(pi)
    draws = draws_for(xp)
    counts = np.zeros(scores.size)
    for _ in range(draws):
        counts[
            to_np(systematic_sample(pi, xp.asarray(rng.permutation(scores.size)), float(rng.random())))
        ] += 1
    frequency = counts / draws
    standard_error = np.sqrt(pi_np * (1 - pi_np) / draws)
    assert np.all(np.abs(frequency - pi_np) <= 5 * standard_error + 1e-12), np.max(
        np.abs(frequency - pi_np) / np.maximum(standard_error, 1e-12)
    )
    assert np.any(pi_np == 1) and np.all(frequency[pi_np == 1] == 1)


def test_horvitz_thompson_mean_is_unbiased(xp, to_np):
    rng = np.random.default_rng(2)
    size, budget = 60, 12
    values = rng.normal(3.0, 2.0, size) * rng.lognormal(0, 1, size)
    scores = np.abs(values) + rng.random(size)  # correlated with the values, as a good score is
    pi = inclusion_probabilities(xp.asarray(scores), budget, smoothing=0.2)
    draws = draws_for(xp)
    estimates = np.empty(draws)
    weight_sums = np.empty(draws)
    for d in range(draws):
        kept = systematic_sample(pi, xp.asarray(rng.permutation(size)), float(rng.random()))
        weights = to_np(horvitz_thompson_weights(pi, kept, budget))
        estimates[d] = np.mean(weights * values[to_np(kept)])  # the weighted batch-mean loss
        weight_sums[d] = weights.sum()
    for sample, truth in ((estimates, values.mean()), (weight_sums, budget)):
        standard_error = sample.std(ddof=1) / np.sqrt(draws)
        assert abs(sample.mean() - truth) <= 5 * standard_error, (sample.mean(), truth, standard_error)


def test_sampling_with_replacement_is_unbiased(xp, to_np):
    rng = np.random.default_rng(3)
    size, budget = 40, 10
    values = rng.lognormal(0, 1, size)
    draw = values / values.sum() * 0.7 + 0.3 / size
    draws = draws_for(xp)
    estimates = np.empty(draws)
    for d in range(draws):
        picked = to_np(sample_with_replacement(xp.asarray(draw), xp.asarray(rng.random(budget))))
        estimates[d] = np.mean(values[picked] / (size * draw[picked]))
    standard_error = estimates.std(ddof=1) / np.sqrt(draws)
    assert abs(estimates.mean() - values.mean()) <= 5 * standard_error


@settings(max_examples=100, deadline=None)
@given(values=wide_scores, data=st.data())
def test_weights_are_finite_for_extreme_scores(xp, to_np, values, data):
    scores = np.array(values)
    budget = data.draw(st.integers(1, scores.size), label="budget")
    pi = inclusion_probabilities(xp.asarray(scores), budget, smoothing=0.5)
    kept = systematic_sample(pi, xp.asarray(np.arange(scores.size)[::-1].copy()), 0.5)
    weights = to_np(horvitz_thompson_weights(pi, kept, budget))
    assert np.all(np.isfinite(weights)) and np.all(weights > 0)


def test_bad_input_is_rejected_with_a_clear_message(xp):
    good = xp.asarray(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(SADPError, match="budget"):
        inclusion_probabilities(good, 4)
    with pytest.raises(SADPError, match="budget"):
        inclusion_probabilities(good, 1.5)
    with pytest.raises(SADPError, match=">= 0"):
        inclusion_probabilities(xp.asarray(np.array([1.0, -2.0])), 1)
    with pytest.raises(SADPError, match="finite"):
        inclusion_probabilities(xp.asarray(np.array([1.0, np.nan])), 1)
    with pytest.raises(SADPError, match="smoothing"):
        inclusion_probabilities(good, 1, smoothing=-1.0)
    with pytest.raises(SADPError, match="one-dimensional"):
        inclusion_probabilities(xp.ones((2, 2)), 1)
    with pytest.raises(SADPError, match="whole number"):
        systematic_sample(xp.asarray(np.array([0.5, 0.7])), xp.asarray(np.array([0, 1])), 0.3)
    with pytest.raises(SADPError, match=r"\[0, 1\)"):
        systematic_sample(xp.asarray(np.array([0.5, 0.5])), xp.asarray(np.array([0, 1])), 1.0)
    with pytest.raises(SADPError, match="permutation"):
        systematic_sample(xp.asarray(np.array([0.5, 0.5])), xp.asarray(np.array([0, 1, 2])), 0.3)
    with pytest.raises(SADPError, match="probability 0"):
        horvitz_thompson_weights(xp.asarray(np.array([1.0, 0.0])), xp.asarray(np.array([1])), 1)
