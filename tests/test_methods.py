"""The baselines, each checked against its published rule (sadp_core.methods)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sadp_core import Pruner
from sadp_core.methods import ScoreTable, make_method
from sadp_core.ordering import EpochOrders


def table_with(latest: np.ndarray) -> ScoreTable:
    table = ScoreTable.empty(latest.shape[0], history=True)
    table.record(np.arange(latest.shape[0]), latest, decay=0.9)
    return table


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def select(
    name: str, latest: np.ndarray, budget: int, seed: int = 0, table: ScoreTable | None = None, **options
):
    """One selection of method ``name``, with the epoch order a Pruner of that seed would use."""
    generator = rng(seed)
    order = EpochOrders(latest.shape[0], seed).draw(generator)
    method = make_method(name, prune_ratio=options.pop("prune_ratio", 0.5), **options)
    return method.select(table or table_with(latest), budget, generator, order)


def test_each_method_says_what_update_expects():
    expected = {"sadp": "bound", "loss": "loss", "full": "loss", "random": "loss",
                "infobatch": "loss", "ucb": "loss", "eps_greedy": "loss", "seta": "loss"}  # fmt: skip
    for name, value in expected.items():
        assert Pruner(num_examples=5, epochs=2, method=name).expects == value


def test_full_keeps_everything_in_pruning_epochs_too():
    pruner = Pruner(num_examples=50, prune_ratio=0.7, epochs=4, method="full")
    for epoch in range(4):
        plan = pruner.plan(epoch)
        assert sorted(plan.indices.tolist()) == list(range(50)) and np.all(plan.weights == 1)
    assert pruner.stats.theoretical_speedup == 1.0


def test_random_is_a_uniform_sample_of_the_budget():
    selection = select("random", np.arange(100.0), 40)
    assert len(np.unique(selection.indices)) == 40
    np.testing.assert_allclose(selection.probabilities, 0.4)
    assert np.all(selection.weights == 1)
    frequency = np.zeros(100)
    for seed in range(2000):
        frequency[select("random", np.zeros(100), 40, seed=seed).indices] += 1
    standard_error = np.sqrt(0.4 * 0.6 / 2000)
    assert np.all(np.abs(frequency / 2000 - 0.4) <= 5 * standard_error)


def test_infobatch_keeps_high_loss_and_upscales_a_random_share_of_low_loss():
    losses = np.array([5.0, 4.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])  # mean ~1.17
    selection = select("infobatch", losses, 6, prune_ratio=0.5)
    kept = set(selection.indices.tolist())
    assert {0, 1} <= kept  # above the mean: always kept
    low_kept = kept - {0, 1}
    assert len(low_kept) == 5  # round(0.5 * 10)
    weights = dict(zip(selection.indices.tolist(), selection.weights.tolist(), strict=False))
    assert weights[0] == weights[1] == 1.0
    assert all(weights[i] == pytest.approx(10 / 5) for i in low_kept)
    np.testing.assert_allclose(selection.probabilities[[0, 1]], 1.0)
    np.testing.assert_allclose(selection.probabilities[2:], 0.5)


def test_infobatch_processes_more_than_the_budget_and_is_unbiased():
    rng_values = rng(5)
    losses = rng_values.lognormal(0, 1, 200)
    draws = 3000
    estimates = np.empty(draws)
    sizes = np.empty(draws)
    for seed in range(draws):
        selection = select("infobatch", losses, 60, seed=seed, prune_ratio=0.7)
        estimates[seed] = np.sum(selection.weights * losses[selection.indices]) / 200
        sizes[seed] = len(selection.indices)
    assert sizes.min() > 60
    error = estimates.std(ddof=1) / np.sqrt(draws)
    assert abs(estimates.mean() - losses.mean()) <= 5 * error


def test_ucb_takes_the_largest_mean_plus_exploration_bonus():
    table = ScoreTable.empty(6, history=True)
    history = [np.array([1.0, 1.0, 5.0, 0.5, 2.0, 0.0]), np.array([1.0, 9.0, 5.0, 0.5, 2.0, 0.0])]
    for losses in history:
        table.record(np.arange(6), losses, decay=0.5)
    # EMA with decay 0.5: means [1, 5, 5, .5, 2, 0]; variance of example 1: 0.5 * (0.5 * 8**2) = 16
    np.testing.assert_allclose(table.mean, [1.0, 5.0, 5.0, 0.5, 2.0, 0.0])
    np.testing.assert_allclose(table.variance, [0.0, 16.0, 0.0, 0.0, 0.0, 0.0])
    selection = select("ucb", table.latest, 3, table=table, exploration=1.0)
    assert set(selection.indices.tolist()) == {1, 2, 4}
    assert np.all(selection.weights == 1)
    np.testing.assert_array_equal(selection.probabilities, [0, 1, 1, 0, 1, 0])


def test_ucb_breaks_ties_at_random():
    chosen = {tuple(sorted(select("ucb", np.ones(10), 5, seed=s).indices)) for s in range(20)}
    assert len(chosen) > 1


def test_eps_greedy_exploits_the_top_and_explores_the_rest():
    losses = np.arange(100.0)
    selection = select("eps_greedy", losses, 20, prune_ratio=0.8, epsilon=0.25)
    kept = selection.indices
    assert len(np.unique(kept)) == 20
    assert set(range(85, 100)) <= set(kept.tolist())  # the 15 greedy picks
    np.testing.assert_allclose(selection.probabilities[85:], 1.0)
    np.testing.assert_allclose(selection.probabilities[:85], 5 / 85)
    assert np.all(selection.weights == 1)


@pytest.mark.parametrize("method", ["random", "infobatch", "ucb", "eps_greedy", "loss", "sadp", "seta"])
def test_every_method_runs_a_whole_schedule(method):
    pruner = Pruner(num_examples=120, prune_ratio=0.5, epochs=5, seed=2, method=method)
    values = rng(9).lognormal(0, 1, 120)
    for epoch in range(5):
        plan = pruner.plan(epoch)
        assert len(np.unique(plan.indices)) == len(plan.indices)
        assert np.all(np.isfinite(plan.weights)) and np.all(plan.weights > 0)
        assert np.all(plan.probabilities[plan.indices] > 0)
        pruner.update(plan.indices, values[plan.indices] * (1 + epoch))
    assert pruner.stats.epochs_planned == 5


def test_seta_processes_the_budget_with_weight_one_in_every_pruned_and_annealing_epoch():
    size, epochs = 1000, 10
    for ratio in (0.3, 0.5, 0.7):
        pruner = Pruner(num_examples=size, prune_ratio=ratio, epochs=epochs, seed=1, method="seta")
        losses = rng(3).lognormal(0, 1, size)
        for epoch in range(epochs):
            plan = pruner.plan(epoch)
            assert len(np.unique(plan.indices)) == len(plan.indices)
            assert np.all(plan.weights == 1)
            if plan.phase != "warmup":  # pruned and (partial) annealing epochs
                assert abs(len(plan.indices) - pruner.budget) <= 0.01 * pruner.budget
                assert abs(plan.probabilities.sum() - pruner.budget) <= 0.01 * pruner.budget
            pruner.update(plan.indices, losses[plan.indices])
        assert pruner.plan(epochs - 1).phase == "anneal"
        expected = (size + (epochs - 1) * pruner.budget) / (epochs * size)
        assert pruner.stats.processed_fraction == pytest.approx(expected, rel=0.01)


def test_seta_window_slides_from_easy_to_hard_then_starts_again():
    size = 2000
    losses = rng(4).lognormal(0, 1, size)
    pruner = Pruner(num_examples=size, prune_ratio=0.5, epochs=12, seed=0, method="seta")
    means = []
    for epoch in range(12):
        plan = pruner.plan(epoch)
        if plan.phase == "prune":
            means.append(losses[plan.indices].mean())
        pruner.update(plan.indices, losses[plan.indices])  # losses do not change: only the window moves
    # pruned epoch 0 takes a uniform share; epochs 1..5 slide the 5-cluster window over 10 clusters
    sliding = means[1:6]
    assert all(later > earlier for earlier, later in itertools.pairwise(sliding))
    assert means[6] < means[5]  # the window starts again at the easy end
    assert means[1] < losses.mean() < means[5]


def test_seta_takes_the_window_clusters_of_a_random_subset():
    losses = np.concatenate([np.full(100, 0.1), np.full(100, 1.0), np.full(100, 10.0), np.full(100, 100.0)])
    method = make_method("seta", prune_ratio=0.5)
    table = table_with(losses)
    order = EpochOrders(400, 0).draw(rng(0))
    from sadp_core.methods import Stage

    # K = 100, subset = 200 random examples, 4 distinct losses -> 4 clusters, window of 2
    kept = [losses[method.select(table, 100, rng(0), order, Stage(i, 8)).indices] for i in (1, 2)]
    subset_losses = np.sort(losses[order[:200]])
    assert np.median(kept[1]) > np.median(kept[0])
    assert kept[0].min() >= subset_losses.min()
    assert set(np.unique(kept[0])) <= set(np.unique(subset_losses))


def test_loss_cluster_ranks_are_intervals_ordered_by_centre():
    from sadp_core.methods import loss_cluster_ranks

    values = rng(8).lognormal(0, 1, 5000)
    ranks = loss_cluster_ranks(values, 10)
    assert ranks.min() == 0 and ranks.max() == 9
    order = np.argsort(values)
    assert np.all(np.diff(ranks[order]) >= 0)  # each cluster is an interval of values
    assert loss_cluster_ranks(np.ones(50), 10).tolist() == [0] * 50
