"""Bad input to every public method of the torch handle (issue 15, point 5).

Each case calls one method of a handle that has trained a warm-up epoch and drawn the
plan of a pruned epoch, with one thing wrong, and checks that it raises
:class:`~sadp_core.SADPError` saying what is wrong (and, where there is a choice, what to
do), and that the score table, the plan, the epoch counter of the batch sampler and the
stats are as before. A non-finite loss is not an error (checking every loss would wait on
the GPU at every step): its examples keep their earlier scores, counted and reported.

The model is a small snnTorch MLP; every method of the handle that
takes an argument is here (``scores``, ``stats``, ``state_dict``, ``synchronize`` and
``detach`` take none).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import snntorch
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import sadp_core
from sadp_core import SADPError, SADPWarning

torch.set_num_threads(1)

T, BATCH, CLASSES, FEATURES, HIDDEN = 4, 8, 5, 20, 32
N = 4 * BATCH


class Net(nn.Module):
    """snnTorch MLP on ``[T, B, F]``: Linear, Leaky, Linear readout; logits are the time mean."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.lif1, self.fc2 = (
            nn.Linear(FEATURES, HIDDEN),
            snntorch.Leaky(0.9),
            nn.Linear(HIDDEN, CLASSES),
        )
        with torch.no_grad():
            self.fc1.weight.mul_(3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem, out = self.lif1.init_leaky(), []
        for x_t in x:
            spk, mem = self.lif1(self.fc1(x_t), mem)
            out.append(self.fc2(spk))
        return torch.stack(out).mean(0)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return Net()


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Direct-current input repeated over time (time-major) and random labels."""
    generator = torch.Generator().manual_seed(0)
    x = 5.0 * torch.rand((N, FEATURES), generator=generator)
    return x.unsqueeze(0).repeat(T, 1, 1), torch.randint(0, CLASSES, (N,), generator=generator)


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, reduction="none")


def warnings_of(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, SADPWarning)]


EPOCHS = 4


class Setup:
    """A handle after a scored warm-up epoch, with the plan of pruned epoch 1 drawn."""

    def __init__(self, **options: Any) -> None:
        self.model = make_model()
        self.x, self.y = make_data()
        self.options = dict(num_examples=N, prune_ratio=0.5, epochs=EPOCHS, seed=0, **options)
        self.h = sadp_core.attach(self.model, **self.options)
        for batch in self.h.batch_sampler(BATCH):
            self.train(np.array(batch))
        self.plan = self.h.plan(1)
        self.outside = np.setdiff1d(np.arange(N), self.plan.indices)[:BATCH]
        self.inside = np.array(self.plan.indices[:BATCH])

    def losses(self, idx: np.ndarray) -> torch.Tensor:
        return cross_entropy(self.model(self.x[:, idx]), self.y[idx])

    def train(self, idx: np.ndarray) -> None:
        self.h.weighted_loss(self.losses(idx), torch.as_tensor(idx)).backward()

    def other(self, **changes: Any) -> sadp_core.Pruner:
        """A handle on a copy of the model, with some options changed."""
        options = {**self.options, **changes}
        return sadp_core.attach(make_model(), **options)

    def state(self) -> tuple[Any, ...]:
        """What bad input must leave as it was."""
        h = self.h
        plan = h._plan
        return (
            np.array(h.scores),
            None if plan is None else (plan.epoch, plan.indices.copy(), plan.weights.copy()),
            h._next_epoch,
            h.stats,
        )


def edited(state: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of a state_dict with the entry at ``path`` replaced (or removed if ``value`` is
    ``DELETE``)."""
    copy = dict(state)
    inner = copy
    for key in path[:-1]:
        inner[key] = dict(inner[key])
        inner = inner[key]
    if value is DELETE:
        del inner[path[-1]]
    else:
        inner[path[-1]] = value
    return copy


DELETE = object()

Case = Callable[[Setup], object]

CASES: dict[str, tuple[Case, str]] = {
    # weighted_loss: the losses
    "losses_short": (lambda s: s.h.weighted_loss(s.losses(s.inside)[:-1], s.inside), r"\[B\] tensor"),
    "losses_per_class": (
        lambda s: s.h.weighted_loss(torch.ones(BATCH, 5), torch.as_tensor(s.inside)),
        r"losses\.mean\(dim=1\)",
    ),
    "losses_scalar": (lambda s: s.h.weighted_loss(s.losses(s.inside).sum(), s.inside), r"\[B\] tensor"),
    "losses_numpy": (lambda s: s.h.weighted_loss(np.ones(BATCH), s.inside), r"got ndarray"),
    "losses_int": (
        lambda s: s.h.weighted_loss(torch.ones(BATCH, dtype=torch.int64), torch.as_tensor(s.inside)),
        r"floating-point tensor.*int64",
    ),
    "losses_complex": (
        lambda s: s.h.weighted_loss(torch.ones(BATCH, dtype=torch.complex64), s.inside),
        r"floating-point tensor.*complex64",
    ),
    # weighted_loss: the indices
    "indices_float": (
        lambda s: s.h.weighted_loss(s.losses(s.inside), torch.as_tensor(s.inside).float()),
        r"integers, got dtype float32; pass the indices the plan gave",
    ),
    "indices_2d": (
        lambda s: s.h.weighted_loss(s.losses(s.inside), torch.as_tensor(s.inside)[None]),
        r"one-dimensional",
    ),
    "indices_beyond_n": (
        lambda s: s.h.weighted_loss(s.losses(s.inside), torch.as_tensor([*s.inside[:-1], N])),
        r"\[0, 32\).*num_examples",
    ),
    "indices_negative": (
        lambda s: s.h.weighted_loss(s.losses(s.inside), torch.as_tensor([*s.inside[:-1], -1])),
        r"\[0, 32\)",
    ),
    "indices_outside_plan_tensor": (
        lambda s: s.h.weighted_loss(s.losses(s.outside), torch.as_tensor(s.outside)),
        r"not in the plan of epoch 1; use its batches",
    ),
    "indices_outside_plan_numpy": (
        lambda s: s.h.weighted_loss(s.losses(s.outside), s.outside),
        r"not in the plan of epoch 1; use its batches",
    ),
    "indices_empty": (
        lambda s: s.h.weighted_loss(torch.ones(0), torch.zeros(0, dtype=torch.int64)),
        r"empty",
    ),
    # update
    "update_lengths": (lambda s: s.h.update(torch.tensor([0, 1]), torch.ones(3)), r"one score per index"),
    "update_negative": (lambda s: s.h.update(torch.tensor([0]), torch.tensor([-1.0])), r">= 0"),
    "update_beyond_n": (lambda s: s.h.update(torch.tensor([N]), torch.ones(1)), r"\[0, 32\)"),
    "update_text": (lambda s: s.h.update(torch.tensor([0]), np.array(["a"])), r"real numbers"),
    # plan
    "plan_negative": (lambda s: s.h.plan(-1), r"outside the schedule of 4 epochs"),
    "plan_beyond": (lambda s: s.h.plan(EPOCHS), r"outside the schedule of 4 epochs"),
    "plan_text": (lambda s: s.h.plan("2"), r"must be an int"),
    "plan_older": (lambda s: s.h.plan(0), r"replaced by that of epoch 1"),
    # the data side
    "batch_size_zero": (lambda s: s.h.batch_sampler(0), r"batch_size must be a positive integer"),
    "batch_size_float": (lambda s: s.h.batch_sampler(2.5), r"batch_size must be a positive integer"),
    "drop_last_text": (lambda s: s.h.batch_sampler(8, drop_last="no"), r"drop_last must be True or False"),
    "set_epoch_negative": (lambda s: s.h.batch_sampler(8).set_epoch(-1), r"non-negative integer"),
    "set_epoch_beyond": (lambda s: s.h.batch_sampler(8).set_epoch(EPOCHS), r"outside the schedule"),
    "set_epoch_older": (lambda s: s.h.batch_sampler(8).set_epoch(0), r"continue with epoch 1 or later"),
    "indexed_length": (
        lambda s: s.h.indexed(TensorDataset(s.y[:-1])),
        r"31 examples but the handle was made for num_examples=32",
    ),
    "indexed_not_a_dataset": (lambda s: s.h.indexed(iter(range(N))), r"map-style dataset"),
    # load_state_dict
    "state_other_n": (
        lambda s: s.h.load_state_dict(s.other(num_examples=N + 1).state_dict()),
        r"num_examples=33 \(here 32\); create the Pruner with the same settings",
    ),
    "state_other_method": (
        lambda s: s.h.load_state_dict(s.other(method="infobatch").state_dict()),
        r"method='infobatch' \(here 'sadp'\)",
    ),
    "state_other_seed": (lambda s: s.h.load_state_dict(s.other(seed=1).state_dict()), r"seed=1 \(here 0\)"),
    "state_other_scope": (
        lambda s: s.h.load_state_dict(s.other(scope="all").state_dict()),
        r"saved with scope='all'.*this handle has scope='readout'",
    ),
    "state_not_a_dict": (lambda s: s.h.load_state_dict([1, 2]), r"not a sadp_core Pruner state_dict"),
    "state_short_table": (
        lambda s: s.h.load_state_dict(edited(s.h.state_dict(), ("latest",), torch.zeros(N - 1))),
        r"do not have 32 entries",
    ),
    "state_bad_progress": (
        lambda s: s.h.load_state_dict(edited(s.h.state_dict(), ("progress", "epochs_planned"), 1.5)),
        r"progress epochs_planned .* must be an integer",
    ),
    "state_missing_progress": (
        lambda s: s.h.load_state_dict(edited(s.h.state_dict(), ("progress", "last_epoch"), DELETE)),
        r"progress in this state_dict must have the entries",
    ),
    "state_missing_plan": (
        lambda s: s.h.load_state_dict(edited(s.h.state_dict(), ("plan",), DELETE)),
        r"no plan entry",
    ),
    "state_plan_index_beyond_n": (
        lambda s: s.h.load_state_dict(
            edited(s.h.state_dict(), ("plan", "indices"), torch.arange(N // 2) + N // 2 + 1)
        ),
        r"not a plan of 32 examples.*save it again",
    ),
    "state_plan_weights": (
        lambda s: s.h.load_state_dict(edited(s.h.state_dict(), ("plan", "weights"), torch.zeros(N // 2))),
        r"one positive weight per index",
    ),
    "state_plan_phase": (
        lambda s: s.h.load_state_dict(edited(s.h.state_dict(), ("plan", "phase"), "anneal")),
        r"the schedule says 'prune'",
    ),
    "state_next_epoch": (
        lambda s: s.h.load_state_dict(edited(s.h.state_dict(), ("torch", "next_epoch"), "x")),
        r"next_epoch .* must be an integer >= 0",
    ),
    "state_torch_entry": (
        lambda s: s.h.load_state_dict(edited(s.h.state_dict(), ("torch",), 3)),
        r"'torch' entry",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_raises_and_changes_nothing(name: str) -> None:
    """Each of :data:`CASES`: an SADPError with the expected message, and nothing changed."""
    call, message = CASES[name]
    setup = Setup()
    setup.train(setup.inside)  # a batch of the pruned epoch, so that the weight table exists
    before = setup.state()
    with pytest.raises(SADPError, match=message):
        call(setup)
    after = setup.state()
    np.testing.assert_array_equal(after[0], before[0])
    assert (after[1][0], *after[2:]) == (before[1][0], *before[2:])
    np.testing.assert_array_equal(after[1][1], before[1][1])
    np.testing.assert_array_equal(after[1][2], before[1][2])
    setup.train(setup.inside)  # and the handle still trains
    assert np.isfinite(setup.h.scores[setup.inside]).all()


def test_weighted_loss_before_any_plan_says_what_to_do() -> None:
    """No plan drawn yet: the error says to iterate the batch sampler (or call plan)."""
    model = make_model()
    x, y = make_data()
    h = sadp_core.attach(model, num_examples=N, epochs=EPOCHS)
    with pytest.raises(SADPError, match=r"no plan yet: iterate h\.batch_sampler"):
        h.weighted_loss(cross_entropy(model(x[:, :BATCH]), y[:BATCH]), torch.arange(BATCH))
    assert np.isnan(h.scores).all() and h._plan is None


def test_a_state_dict_that_fails_late_replaces_nothing() -> None:
    """A state_dict whose score table is fine but whose plan is corrupt: the table is not
    loaded either (before, the table was replaced before the plan was looked at)."""
    setup = Setup()
    other = setup.other()
    other.plan(0)
    other.update(np.arange(N), np.full(N, 7.0))
    state = edited(other.state_dict(), ("plan", "probabilities"), torch.ones(3))
    before = setup.state()
    with pytest.raises(SADPError, match="not a plan of 32 examples"):
        setup.h.load_state_dict(state)
    np.testing.assert_array_equal(setup.state()[0], before[0])


def test_a_nan_loss_is_reported_and_leaves_its_examples_scores() -> None:
    """One example's loss is NaN (its error at the readout is then NaN too): no error (that
    check would wait on the GPU at every step), but the example's NaN score is not written
    (it keeps its warm-up score), it is counted in ``stats.nonfinite_scores``, and the
    warning names the cause; the other examples of the batch are scored."""
    setup = Setup()
    idx = setup.inside
    clean = np.array(setup.h.scores)  # the warm-up scores, at the same weights
    others = np.delete(idx, 2)
    setup.h.update(others, np.full(others.size, 1e-3))  # to see that they are written again
    before = np.array(setup.h.scores)
    poison = torch.ones(BATCH)
    poison[2] = float("nan")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        losses = setup.losses(idx) * poison
        setup.h.weighted_loss(losses, torch.as_tensor(idx)).backward()
        scores = np.array(setup.h.scores)
    messages = warnings_of(record)
    assert len(messages) == 1 and "NaN or infinite loss" in messages[0], messages
    assert scores[idx[2]] == before[idx[2]]
    np.testing.assert_allclose(scores[others], clean[others], rtol=1e-6)
    assert setup.h.stats.nonfinite_scores == 1
    assert not any(issubclass(w.category, SADPWarning) and "unscored" in str(w.message) for w in record)
