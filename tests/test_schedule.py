"""Warm-up, pruning and annealing epochs (sadp_core.schedule)."""

from __future__ import annotations

import pytest

from sadp_core import SADPError, Schedule


@pytest.mark.parametrize(
    ("epochs", "warmup", "anneal", "phases"),
    [
        (8, 1, 0.125, "WPPPPPPA"),
        (10, 1, 0.125, "WPPPPPPPPA"),  # InfoBatch: prune while epoch < 0.875 * 10
        (10, 2, 0.0, "WWPPPPPPPP"),
        (4, 0, 0.5, "PPAA"),
        (3, 1, 0.125, "WPP"),
        (2, 3, 0.5, "WW"),
        (5, 1, 1.0, "WAAAA"),
    ],
)
def test_phases(epochs, warmup, anneal, phases):
    schedule = Schedule(epochs, warmup, anneal)
    names = {"W": "warmup", "P": "prune", "A": "anneal"}
    assert [schedule.phase(e) for e in range(epochs)] == [names[c] for c in phases]
    assert schedule.pruned_epochs == phases.count("P")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [((0,), "epochs"), ((3, -1), "warmup_epochs"), ((3, 1, -0.1), "anneal_fraction"), ((3.0,), "epochs")],
)
def test_bad_schedules_are_refused(arguments, message):
    with pytest.raises(SADPError, match=message):
        Schedule(*arguments)
