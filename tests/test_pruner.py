"""The Pruner: plans, schedule, updates, bad input, statistics and resume (DESIGN.md section 6)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sadp_core import METHODS, Pruner, SADPError, SADPWarning


def fake_scores(indices: np.ndarray, epoch: int) -> np.ndarray:
    """Deterministic, example-dependent scores that change from epoch to epoch."""
    indices = np.asarray(indices)
    return (np.sin(indices * 1.7 + epoch) + 1.5) * (1 + indices % 7)


def run(pruner: Pruner, epochs: range, batch: int = 32) -> list:
    plans = []
    for epoch in epochs:
        plan = pruner.plan(epoch)
        for start in range(0, len(plan.indices), batch):
            idx = plan.indices[start : start + batch]
            pruner.update(idx, fake_scores(idx, epoch))
        plans.append(plan)
    return plans


def assert_same_plan(a, b) -> None:
    """Bit-for-bit equality of two plans."""
    assert (a.epoch, a.phase) == (b.epoch, b.phase)
    for field in ("indices", "weights", "probabilities"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_plan_follows_the_schedule():
    pruner = Pruner(num_examples=100, prune_ratio=0.3, epochs=8, seed=1)
    plans = run(pruner, range(8))
    assert [p.phase for p in plans] == ["warmup"] + ["prune"] * 6 + ["anneal"]
    for plan in plans:
        expected = 100 if plan.phase != "prune" else pruner.budget
        assert len(plan.indices) == expected == len(np.unique(plan.indices)) == len(plan.weights)
        assert plan.probabilities.shape == (100,)
        if plan.phase != "prune":
            assert np.all(plan.weights == 1) and np.all(plan.probabilities == 1)
    stats = pruner.stats
    assert stats.epochs_planned == 8
    assert stats.examples_planned == 2 * 100 + 6 * 70
    assert stats.processed_fraction == pytest.approx((200 + 420) / 800)
    assert stats.theoretical_speedup == pytest.approx(800 / 620)


def test_stats_project_the_rest_of_the_schedule():
    pruner = Pruner(num_examples=100, prune_ratio=0.5, epochs=8, seed=1)
    run(pruner, range(2))
    stats = pruner.stats
    assert stats.processed_fraction == pytest.approx(150 / 200)
    assert stats.projected_fraction == pytest.approx((100 + 6 * 50 + 100) / 800)
    assert stats.theoretical_speedup == pytest.approx(800 / 500)


def test_plan_is_drawn_once_and_shuffled():
    pruner = Pruner(num_examples=500, prune_ratio=0.5, epochs=4, seed=3)
    first = pruner.plan(0)
    pruner.update(first.indices, fake_scores(first.indices, 0))
    assert pruner.plan(0) is first
    assert not np.array_equal(first.indices, np.sort(first.indices))
    plan = pruner.plan(1)
    pruner.update(plan.indices[:10], np.full(10, 1e6))
    again = pruner.plan(1)
    assert again is plan
    with pytest.raises(SADPError, match="replaced"):
        pruner.plan(0)
    with pytest.raises(ValueError):  # read-only: a plan cannot be changed by accident
        plan.indices[0] = 0


def test_same_seed_same_plans_and_other_seed_other_plans():
    plans_a = run(Pruner(num_examples=300, prune_ratio=0.5, epochs=5, seed=7), range(5))
    plans_b = run(Pruner(num_examples=300, prune_ratio=0.5, epochs=5, seed=7), range(5))
    plans_c = run(Pruner(num_examples=300, prune_ratio=0.5, epochs=5, seed=8), range(5))
    for a, b in zip(plans_a, plans_b, strict=False):
        assert_same_plan(a, b)
    assert not np.array_equal(plans_a[2].indices, plans_c[2].indices)


def test_no_global_random_state_is_used_or_changed():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    run(Pruner(num_examples=50, prune_ratio=0.5, epochs=3, seed=0), range(3))
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("replacement", [False, True])
def test_resume_from_state_dict_reproduces_the_remaining_plans(method, replacement):
    options = dict(
        num_examples=200, prune_ratio=0.5, epochs=6, seed=11, method=method, replacement=replacement
    )
    reference = Pruner(**options)
    expected = run(reference, range(6))

    interrupted = Pruner(**options)
    run(interrupted, range(2))
    plan = interrupted.plan(2)  # checkpoint in the middle of epoch 2
    interrupted.update(plan.indices[:40], fake_scores(plan.indices[:40], 2))
    state = pickle.loads(pickle.dumps(interrupted.state_dict()))

    resumed = Pruner(**options)
    resumed.load_state_dict(state)
    assert_same_plan(resumed.plan(2), plan)
    for start in range(40, len(plan.indices), 32):
        idx = plan.indices[start : start + 32]
        resumed.update(idx, fake_scores(idx, 2))
    rest = run(resumed, range(3, 6))
    for a, b in zip(expected[3:], rest, strict=False):
        assert_same_plan(a, b)
    assert resumed.stats == reference.stats
    np.testing.assert_array_equal(resumed.scores, reference.scores)


def test_state_dict_of_another_configuration_is_refused():
    state = Pruner(num_examples=100, epochs=3).state_dict()
    with pytest.raises(SADPError, match="num_examples=100"):
        Pruner(num_examples=101, epochs=3).load_state_dict(state)
    with pytest.raises(SADPError, match="method"):
        Pruner(num_examples=100, epochs=3, method="random").load_state_dict(state)
    with pytest.raises(SADPError, match="state_dict"):
        Pruner(num_examples=100, epochs=3).load_state_dict({"scores": np.zeros(100)})


def test_update_accepts_arrays_of_every_backend(xp, to_np):
    pruner = Pruner(num_examples=20, prune_ratio=0.5, epochs=3, seed=0)
    indices = np.array([3, 1, 4, 15, 9])
    pruner.update(xp.asarray(indices), xp.asarray(np.array([1.0, 2.0, 3.0, 4.0, 5.0])))
    pruner.update(xp.asarray(np.array([0, 2])), xp.asarray(np.array([7, 8])))  # integer scores
    pruner.update(xp.asarray(np.array([6])), xp.asarray(np.array([0.5], dtype=np.float32)))
    expected = np.full(20, np.nan)
    expected[indices] = [1.0, 2.0, 3.0, 4.0, 5.0]
    expected[[0, 2, 6]] = [7.0, 8.0, 0.5]
    np.testing.assert_array_equal(pruner.scores, expected)


@pytest.mark.backend("torch")
def test_update_detaches_torch_tensors():
    import torch

    pruner = Pruner(num_examples=5, epochs=2)
    scores = torch.tensor([1.0, 2.0], requires_grad=True) * 2
    pruner.update(torch.tensor([0, 4]), scores)
    np.testing.assert_array_equal(pruner.scores[[0, 4]], [2.0, 4.0])


@pytest.mark.parametrize(
    ("indices", "scores", "message"),
    [
        (np.array([0, 10]), np.ones(2), r"\[0, 10\)"),
        (np.array([-1]), np.ones(1), r"\[0, 10\)"),
        (np.array([0.0, 1.0]), np.ones(2), "integers"),
        (np.array([True, False]), np.ones(2), "integers"),
        (np.array([[0, 1]]), np.ones(2), "one-dimensional"),
        (np.array([0, 1, 2]), np.ones(2), "one score per index"),
        (np.array([0, 1]), np.ones((2, 1)), "one score per index"),
        (np.array([0, 1]), np.array([1.0, -0.5]), ">= 0"),
        (np.array([0, 1]), np.array(["a", "b"]), "real numbers"),
        ("0, 1", np.ones(2), "one-dimensional|integers"),
    ],
)
def test_bad_updates_raise_and_leave_the_table_untouched(indices, scores, message):
    pruner = Pruner(num_examples=10, epochs=2)
    pruner.update(np.array([0, 1]), np.array([5.0, 6.0]))
    before = pruner.scores.copy()
    with pytest.raises(SADPError, match=message):
        pruner.update(indices, scores)
    np.testing.assert_array_equal(pruner.scores, before)


def test_nonfinite_scores_are_ignored_counted_and_reported():
    pruner = Pruner(num_examples=6, prune_ratio=0.5, epochs=3, seed=0)
    pruner.update(np.arange(6), np.arange(1.0, 7.0))
    with pytest.warns(SADPWarning, match="2 non-finite"):
        pruner.update(np.array([0, 1, 2]), np.array([np.nan, 10.0, np.inf]))
    np.testing.assert_array_equal(pruner.scores, [1.0, 10.0, 3.0, 4.0, 5.0, 6.0])
    assert pruner.stats.nonfinite_scores == 2
    pruner.plan(0)
    plan = pruner.plan(1)
    assert np.all(np.isfinite(plan.probabilities)) and np.all(np.isfinite(plan.weights))


@pytest.mark.parametrize("method", ["sadp", "loss"])
def test_constant_scores_give_uniform_probabilities(method):
    for value in (0.0, 2.5):
        pruner = Pruner(num_examples=40, prune_ratio=0.25, epochs=3, method=method)
        pruner.plan(0)
        pruner.update(np.arange(40), np.full(40, value))
        np.testing.assert_allclose(pruner.plan(1).probabilities, 0.75)
        np.testing.assert_allclose(pruner.plan(1).weights, 1.0)


def test_unscored_examples_take_the_largest_known_score():
    pruner = Pruner(num_examples=10, prune_ratio=0.5, epochs=3, seed=0, smoothing=0.0, warmup_epochs=0)
    pruner.update(np.arange(8), np.array([1.0, 1, 1, 1, 1, 1, 1, 4]))
    assert pruner.stats.unscored_examples == 2
    plan = pruner.plan(0)
    np.testing.assert_allclose(plan.probabilities[[7, 8, 9]], plan.probabilities[7])
    assert plan.probabilities[8] > plan.probabilities[0]


def test_a_plan_before_any_score_is_uniform():
    pruner = Pruner(num_examples=10, prune_ratio=0.5, epochs=2, warmup_epochs=0)
    np.testing.assert_allclose(pruner.plan(0).probabilities, 0.5)


def test_sadp_inclusion_frequencies_and_weights_over_seeds():
    """Across seeds, example i is in epoch 1's plan with probability plan.probabilities[i]."""
    size, draws = 30, 4000
    scores = np.linspace(0.1, 5.0, size) ** 2
    counts = np.zeros(size)
    weighted_means = np.empty(draws)
    values = np.cos(np.arange(size)) + 2
    for seed in range(draws):
        pruner = Pruner(num_examples=size, prune_ratio=0.6, epochs=3, seed=seed, correction="unbiased")
        pruner.plan(0)
        pruner.update(np.arange(size), scores)
        plan = pruner.plan(1)
        counts[plan.indices] += 1
        weighted_means[seed] = np.mean(plan.weights * values[plan.indices])
    pi = plan.probabilities
    standard_error = np.sqrt(pi * (1 - pi) / draws)
    assert np.all(np.abs(counts / draws - pi) <= 5 * standard_error + 1e-12)
    error = weighted_means.std(ddof=1) / np.sqrt(draws)
    assert abs(weighted_means.mean() - values.mean()) <= 5 * error


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(prune_ratio=1.0), "prune_ratio"),
        (dict(prune_ratio=-0.1), "prune_ratio"),
        (dict(prune_ratio="0.3"), "prune_ratio"),
        (dict(num_examples=0), "num_examples"),
        (dict(num_examples=10.5), "num_examples"),
        (dict(epochs=0), "epochs"),
        (dict(seed=-1), "seed"),
        (dict(method="infobach"), "unknown method 'infobach'"),
        (dict(warmup_epochs=-1), "warmup_epochs"),
        (dict(anneal_fraction=1.5), "anneal_fraction"),
        (dict(smoothing=-1.0), "smoothing"),
        (dict(epsilon=2.0), "epsilon"),
    ],
)
def test_bad_configuration_is_refused(options, message):
    config = dict(num_examples=10, epochs=3) | options
    with pytest.raises(SADPError, match=message):
        Pruner(**config)


def test_epochs_outside_the_schedule_are_refused():
    pruner = Pruner(num_examples=10, epochs=3)
    with pytest.raises(SADPError, match="outside the schedule"):
        pruner.plan(3)
    with pytest.raises(SADPError, match="epoch must be an int"):
        pruner.plan(1.0)


def test_scores_cannot_be_written_through_the_property():
    pruner = Pruner(num_examples=3, epochs=2)
    with pytest.raises(ValueError):
        pruner.scores[0] = 1.0


@pytest.mark.parametrize("method", ["sadp", "loss"])
def test_annealed_correction_raises_the_weights_from_one_to_horvitz_thompson(method):
    """correction="annealed": weights (K / (N pi)) ** beta, beta = 0 at the first pruned epoch,
    1 at the last; the same draws as "unbiased" and "none" (only the weights differ)."""
    size, epochs = 200, 10
    scores = np.random.default_rng(0).lognormal(0, 1, size)
    pruners = {
        name: Pruner(
            num_examples=size, prune_ratio=0.5, epochs=epochs, seed=3, method=method, correction=name
        )
        for name in ("annealed", "unbiased", "none")
    }
    pruned = [e for e in range(epochs) if pruners["annealed"].schedule.phase(e) == "prune"]
    for epoch in range(epochs):
        plans = {name: pruner.plan(epoch) for name, pruner in pruners.items()}
        for pruner in pruners.values():
            pruner.update(plans["annealed"].indices, scores[plans["annealed"].indices])
        np.testing.assert_array_equal(plans["annealed"].indices, plans["unbiased"].indices)
        np.testing.assert_array_equal(plans["none"].indices, plans["unbiased"].indices)
        if epoch not in pruned:
            continue
        beta = pruned.index(epoch) / (len(pruned) - 1)
        horvitz_thompson = plans["unbiased"].weights
        assert np.ptp(horvitz_thompson) > 0.5  # the weights do vary
        np.testing.assert_allclose(plans["annealed"].weights, horvitz_thompson**beta)
        np.testing.assert_array_equal(plans["none"].weights, 1.0)
    assert Pruner(num_examples=5, epochs=2).method.correction == "annealed"  # the default


def test_unknown_correction_is_refused():
    with pytest.raises(SADPError, match="correction must be one of"):
        Pruner(num_examples=10, epochs=2, correction="partly")


# -- property-based: the writes to the score table ----------------------------------------------

SIZE = 12


@st.composite
def updates(draw: st.DrawFn, nonfinite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Distinct valid indices in [0, SIZE) and aligned non-negative scores (some NaN or
    infinite if ``nonfinite``), with random integer and float dtypes."""
    indices = draw(st.lists(st.integers(0, SIZE - 1), min_size=0, max_size=SIZE, unique=True))
    finite = st.floats(0, 1e30, allow_nan=False, allow_infinity=False)
    element = st.one_of(finite, st.sampled_from([np.nan, np.inf, -np.inf])) if nonfinite else finite
    scores = draw(st.lists(element, min_size=len(indices), max_size=len(indices)))
    index_dtype = draw(st.sampled_from([np.int64, np.int32, np.uint16]))
    score_dtype = draw(st.sampled_from([np.float64, np.float32]))
    return np.array(indices, dtype=index_dtype), np.array(scores, dtype=score_dtype)


@given(st.lists(updates(nonfinite=True), max_size=6), st.sampled_from(["sadp", "ucb"]))
def test_valid_updates_are_recorded_exactly(batches, method):
    """Any sequence of valid updates: each finite score is written exactly (as float64), the
    latest one wins, non-finite ones are skipped and counted, untouched examples stay NaN;
    for UCB the moving mean and variance follow their recurrences."""
    pruner = Pruner(num_examples=SIZE, epochs=3, method=method, decay=0.5)
    latest, mean, variance = np.full(SIZE, np.nan), np.full(SIZE, np.nan), np.zeros(SIZE)
    skipped = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SADPWarning)
        for indices, scores in batches:
            pruner.update(indices, scores)
            values = scores.astype(np.float64)
            for index, value in zip(indices.tolist(), values.tolist(), strict=True):
                if not np.isfinite(value):
                    skipped += 1
                    continue
                latest[index] = value
                if np.isnan(mean[index]):
                    mean[index] = value
                else:
                    difference = value - mean[index]
                    mean[index] += 0.5 * difference
                    variance[index] = 0.5 * (variance[index] + 0.5 * difference**2)
    np.testing.assert_array_equal(pruner.scores, latest)
    assert pruner.stats.nonfinite_scores == skipped
    assert pruner.stats.unscored_examples == int(np.isnan(latest).sum())
    if method == "ucb":
        table = pruner._table
        np.testing.assert_allclose(table.mean, mean, rtol=1e-12)
        np.testing.assert_allclose(table.variance, variance, rtol=1e-12, atol=1e-300)


@st.composite
def bad_updates(draw: st.DrawFn) -> tuple[object, object, str]:
    """An update with exactly one thing wrong, and the message it must raise."""
    indices, scores = draw(updates())
    if indices.size == 0:
        indices, scores = np.array([0]), np.array([1.0])
    indices, scores = indices.astype(np.int64), scores.astype(np.float64)
    wrong = draw(st.sampled_from(["beyond", "negative_index", "float_index", "length", "negative_score"]))
    position = draw(st.integers(0, indices.size - 1))
    if wrong == "beyond":
        indices[position] = draw(st.integers(SIZE, 2**62))
        return indices, scores, rf"\[0, {SIZE}\)"
    if wrong == "negative_index":
        indices[position] = draw(st.integers(-(2**62), -1))
        return indices, scores, rf"\[0, {SIZE}\)"
    if wrong == "float_index":
        return indices.astype(np.float64), scores, "integers"
    if wrong == "length":
        extra = draw(st.integers(1, 3))
        return indices, np.concatenate([scores, np.ones(extra)]), "one score per index"
    scores[position] = -draw(st.floats(1e-300, 1e30))
    return indices, scores, ">= 0"


@given(st.lists(updates(), max_size=3), bad_updates(), st.sampled_from(["sadp", "ucb"]))
def test_invalid_updates_raise_and_leave_the_table_unchanged(history, bad, method):
    """After any valid history, an update with one wrong index or score raises SADPError
    and changes neither the scores, nor UCB's moving averages, nor the counts."""
    pruner = Pruner(num_examples=SIZE, epochs=3, method=method)
    for indices, scores in history:
        pruner.update(indices, scores)
    table = pruner._table
    before = [None if array is None else array.copy() for array in (table.latest, table.mean, table.variance)]
    stats = pruner.stats
    indices, scores, message = bad
    with pytest.raises(SADPError, match=message):
        pruner.update(indices, scores)
    for array, saved in zip((table.latest, table.mean, table.variance), before, strict=True):
        if saved is not None:
            np.testing.assert_array_equal(array, saved)
    assert pruner.stats == stats
