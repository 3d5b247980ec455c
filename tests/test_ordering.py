"""Per-epoch random orders (sadp_core.ordering) and the systematic draw over them."""

from __future__ import annotations

import numpy as np
import pytest

from sadp_core import systematic_sample
from sadp_core.ordering import EpochOrders


@pytest.mark.parametrize("size", [1, 2, 3, 10, 97, 1000])
def test_every_order_is_a_permutation(size):
    orders = EpochOrders(size, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert sorted(orders.draw(rng).tolist()) == list(range(size))


def test_orders_depend_on_the_seed_and_change_every_epoch():
    first = EpochOrders(500, seed=1).draw(np.random.default_rng(0))
    again = EpochOrders(500, seed=1).draw(np.random.default_rng(0))
    other_seed = EpochOrders(500, seed=2).draw(np.random.default_rng(0))
    next_epoch = EpochOrders(500, seed=1).draw(np.random.default_rng(1))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_seed)
    assert not np.array_equal(first, next_epoch)


def test_neighbours_change_from_epoch_to_epoch():
    """The stride is random, so who follows whom is not fixed across epochs."""
    orders = EpochOrders(1000, seed=0)
    rng = np.random.default_rng(5)
    successor_of_0 = set()
    for _ in range(30):
        order = orders.draw(rng)
        position = int(np.flatnonzero(order == 0)[0])
        successor_of_0.add(int(order[(position + 1) % 1000]))
    assert len(successor_of_0) >= 25


def test_each_position_is_equally_likely_for_an_example():
    """Over seeds, example 0 lands in each tenth of the order with probability 1/10."""
    size, draws = 200, 4000
    counts = np.zeros(10)
    for seed in range(draws):
        order = EpochOrders(size, seed=seed).draw(np.random.default_rng(seed + 10**6))
        counts[int(np.flatnonzero(order == 0)[0]) * 10 // size] += 1
    standard_error = np.sqrt(0.1 * 0.9 / draws)
    assert np.all(np.abs(counts / draws - 0.1) <= 5 * standard_error)


def test_a_draw_whose_cumulative_sum_falls_short_still_keeps_exactly_k():
    """30000 x 0.1 sums to 3000 - 1.6e-9 in floating point; with u near 1 the last point
    lies past the last interval's end and is given to the last interval."""
    probabilities = np.full(30_000, 0.1)
    offset = 1 - 2.0**-40
    assert np.cumsum(probabilities)[-1] < 2999 + offset  # the last point u + 2999 is past the end
    kept = systematic_sample(probabilities, np.arange(30_000), offset)
    assert kept.shape == (3000,) and np.unique(kept).size == 3000
    assert 29_999 in kept
