"""The SpikingJelly adapter on real ``spikingjelly.activation_based`` networks.

Ground truth for every score is a per-example loop on a deep copy of the model made
before ``attach``: forward one example, the same unweighted loss, backward, and the norm
of the readout's ``[dW, db]`` (or of every Linear/Conv layer for ``scope="all"``).

The file runs only where SpikingJelly is importable (see ``conftest.py``). Only
``spikingjelly.activation_based.{neuron, layer, functional, surrogate}`` are imported:
SpikingJelly's torchvision/torchaudio extras do not import beside the CPU torch.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sadp_core.adapters import spikingjelly as sj_adapter
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop
from torch.utils.data import DataLoader, TensorDataset

import sadp_core
from sadp_core import SADPError, SADPWarning

torch.set_num_threads(1)

T = 4  # time steps
BATCH = 16
FEATURES, HIDDEN, CLASSES = 20, 32, 5
RELATIVE_SLACK = 1e-5  # float32 rounding of the bound and of the autograd ground truth


# -- models ---------------------------------------------------------------------------

NEURONS: dict[str, Callable[[], nn.Module]] = {
    "LIF": lambda: neuron.LIFNode(surrogate_function=surrogate.ATan()),
    "IF": lambda: neuron.IFNode(surrogate_function=surrogate.ATan()),
    "PLIF": lambda: neuron.ParametricLIFNode(surrogate_function=surrogate.Sigmoid()),
}


class TimeMean(nn.Module):
    """``body(x)`` for a time-major ``[T, B, ...]`` input, averaged over time: ``[B, C]`` logits."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(0)


class SingleStepMLP(nn.Module):
    """Single-step mode: a Python loop over ``T``; the readout is called ``T`` times with ``[B, F]``."""

    def __init__(self, make_neuron: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.fc = layer.Linear(FEATURES, HIDDEN)
        self.sn = make_neuron()
        self.readout = layer.Linear(HIDDEN, CLASSES)
        functional.set_step_mode(self, "s")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.readout(self.sn(self.fc(x_t))) for x_t in x]).mean(0)


def multi_step_mlp(make_neuron: Callable[[], nn.Module]) -> nn.Module:
    """Multi-step mode: the readout ``layer.Linear`` sees ``[T, B, F]``."""
    body = nn.Sequential(layer.Linear(FEATURES, HIDDEN), make_neuron(), layer.Linear(HIDDEN, CLASSES))
    functional.set_step_mode(body, "m")
    return TimeMean(body)


def seq_to_ann_mlp(make_neuron: Callable[[], nn.Module]) -> nn.Module:
    """``SeqToANNContainer(nn.Linear)`` readout: the Linear sees ``[T*B, F]`` (time-major) inside."""
    body = nn.Sequential(
        layer.SeqToANNContainer(nn.Linear(FEATURES, HIDDEN)),
        make_neuron(),
        layer.SeqToANNContainer(nn.Linear(HIDDEN, CLASSES)),
    )
    functional.set_step_mode(body, "m")
    return TimeMean(body)


def conv_net(make_neuron: Callable[[], nn.Module]) -> nn.Module:
    """Multi-step conv net on ``[T, B, 1, 8, 8]``: Conv+BN(eval)+neuron, strided Conv without bias, Linear."""
    body = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1),
        layer.BatchNorm2d(4),
        make_neuron(),
        layer.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
        make_neuron(),
        layer.Flatten(),
        layer.Linear(6 * 4 * 4, CLASSES),
    )
    functional.set_step_mode(body, "m")
    body[1].eval()  # BatchNorm in eval mode does not mix examples
    with torch.no_grad():  # non-trivial running statistics; a second layer that spikes
        body[3].weight.mul_(10.0)
        body[1].running_mean.uniform_(-0.2, 0.2)
        body[1].running_var.uniform_(0.5, 2.0)
    return TimeMean(body)


class MeanOverTimeAndPositions(nn.Module):
    """``[T, B, C, H, W]`` -> ``[B, C]`` logits: a conv readout averaged over time and positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(0, 3, 4))


ARCHITECTURES: dict[str, Callable[[Callable[[], nn.Module]], nn.Module]] = {
    "multi_step": multi_step_mlp,
    "seq_to_ann": seq_to_ann_mlp,
    "single_step": SingleStepMLP,
    "conv": conv_net,
}
LINEAR_ARCHITECTURES = ("multi_step", "seq_to_ann", "single_step")


def make_model(architecture: str, neuron_name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ARCHITECTURES[architecture](NEURONS[neuron_name])


def make_data(architecture: str, n: int = BATCH, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Direct-current input repeated over time (time-major) and random labels."""
    generator = torch.Generator().manual_seed(seed)
    shape = (n, 1, 8, 8) if architecture == "conv" else (n, FEATURES)
    x = 5.0 * torch.rand(shape, generator=generator)
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    return x.unsqueeze(0).repeat(T, *([1] * x.ndim)), y


# -- scores and ground truth ----------------------------------------------------------


def handle_scores(
    model: nn.Module, h: sadp_core.Pruner, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray
) -> np.ndarray:
    """One training step through the handle (no optimizer step); the batch's scores."""
    losses = F.cross_entropy(model(x), y, reduction="none")
    h.weighted_loss(losses, torch.as_tensor(idx)).backward()
    functional.reset_net(model)
    return np.array(h.scores[idx])


def true_norms(reference: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> np.ndarray:
    """Per-example norm of the concatenated weight and bias gradients of ``layers``, one example at a time."""
    norms = []
    for i in range(y.shape[0]):
        reference.zero_grad()
        F.cross_entropy(reference(x[:, i : i + 1]), y[i : i + 1]).backward()
        functional.reset_net(reference)
        grads = [
            p.grad.flatten()
            for name in layers
            for p in reference.get_submodule(name).parameters(recurse=False)
            if p.grad is not None
        ]
        norms.append(torch.cat(grads).double().norm().item())
    return np.array(norms)


def tapped_layers(model: nn.Module) -> list[str]:
    """Every Linear and Conv layer (what ``scope="all"`` taps)."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def firing_rates(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Mean spike rate of each neuron call on ``x`` (to show that a test is not vacuous)."""
    rates: list[float] = []
    hooks = [
        m.register_forward_hook(lambda m, a, out: rates.append(out.detach().mean().item()))
        for m in model.modules()
        if isinstance(m, neuron.BaseNode)
    ]
    with torch.no_grad():
        model(x)
    functional.reset_net(model)
    for hook in hooks:
        hook.remove()
    return rates


def assert_bounds(bound: np.ndarray, truth: np.ndarray) -> None:
    assert np.all(truth > 0)
    ratio = bound / truth
    assert np.all(ratio >= 1 - RELATIVE_SLACK), f"bound below the true norm: min ratio {ratio.min()}"


def attach_fresh(model: nn.Module, n: int = BATCH, **options) -> sadp_core.Pruner:
    """Attach and draw the warm-up plan (every example, weight 1)."""
    h = sadp_core.attach(model, num_examples=n, prune_ratio=0.5, epochs=4, seed=0, **options)
    h.plan(0)
    return h


ALL_CASES = [(a, n) for a in ARCHITECTURES for n in NEURONS]


# -- 1. the bound, the conv factor, the exact score -------------------------------------


@pytest.mark.parametrize(("architecture", "neuron_name"), ALL_CASES)
def test_bound_is_at_least_the_true_readout_gradient_norm(architecture: str, neuron_name: str) -> None:
    """Each example's score bounds its true readout gradient norm ``||[dW, db]||_F``."""
    model = make_model(architecture, neuron_name)
    reference = copy.deepcopy(model)
    x, y = make_data(architecture)
    assert all(0.05 < rate < 0.95 for rate in firing_rates(reference, x))
    h = attach_fresh(model)
    bound = handle_scores(model, h, x, y, np.arange(BATCH))
    truth = true_norms(reference, x, y, [h.readout_name])
    assert_bounds(bound, truth)
    assert np.any(bound > truth * 1.01)  # spikes vary over time: the bound is not trivially tight


@pytest.mark.parametrize("neuron_name", NEURONS)
def test_scope_all_bounds_every_linear_and_conv_gradient(neuron_name: str) -> None:
    """``scope="all"`` on the conv net bounds the norm of all Linear/Conv gradients together.

    This checks the conv factor ``sqrt(kh*kw*||s||^2 + P)`` (with and without bias, stride 2).
    """
    model = make_model("conv", neuron_name)
    reference = copy.deepcopy(model)
    x, y = make_data("conv")
    h = attach_fresh(model, scope="all")
    bound = handle_scores(model, h, x, y, np.arange(BATCH))
    truth = true_norms(reference, x, y, tapped_layers(reference))
    assert len(tapped_layers(reference)) == 3
    assert_bounds(bound, truth)


@pytest.mark.parametrize("drive", [5.0, 0.0], ids=["every_step_spikes", "no_spikes"])
def test_conv_readout_bound_is_tight_where_the_conv_factor_matters(drive: float) -> None:
    """A Conv2d readout averaged over time and positions, after IF neurons driven to spike at
    every step (or never): every output position gets the same error, so the true gradient
    nearly reaches ``sqrt(kh*kw*||s||^2 + P) ||e||``. Without the kernel area (dense spikes) or
    the ``P`` of the bias (no spikes) the bound would fall below the true norm here.
    """
    torch.manual_seed(0)
    body = nn.Sequential(neuron.IFNode(), layer.Conv2d(1, CLASSES, 3))
    functional.set_step_mode(body, "m")
    model = nn.Sequential(body, MeanOverTimeAndPositions())
    reference = copy.deepcopy(model)
    x = torch.full((T, BATCH, 1, 8, 8), drive)
    y = torch.randint(0, CLASSES, (BATCH,), generator=torch.Generator().manual_seed(0))
    h = attach_fresh(model, readout="0.1")
    bound = handle_scores(model, h, x, y, np.arange(BATCH))
    truth = true_norms(reference, x, y, ["0.1"])
    assert_bounds(bound, truth)
    assert np.all(bound < 2 * truth)


@pytest.mark.parametrize(("architecture", "neuron_name"), ALL_CASES)
def test_exact_score_equals_the_true_readout_gradient_norm(architecture: str, neuron_name: str) -> None:
    """``score="exact"`` (ghost norm) equals the true readout gradient norm of Linear readouts."""
    model = make_model(architecture, neuron_name)
    reference = copy.deepcopy(model)
    x, y = make_data(architecture)
    h = attach_fresh(model, score="exact")
    exact = handle_scores(model, h, x, y, np.arange(BATCH))
    truth = true_norms(reference, x, y, [h.readout_name])
    np.testing.assert_allclose(exact, truth, rtol=1e-4)


# -- 2. non-uniform plan weights ------------------------------------------------------


@pytest.mark.parametrize("architecture", LINEAR_ARCHITECTURES)
def test_bound_holds_under_non_uniform_plan_weights(architecture: str) -> None:
    """In a pruning epoch the loss weights differ; the recorded score is that of the unweighted loss."""
    n = 3 * BATCH
    model = make_model(architecture, "LIF")
    reference = copy.deepcopy(model)
    unweighted_model = copy.deepcopy(model)
    x_all, y_all = make_data(architecture, n)
    h = sadp_core.attach(model, num_examples=n, prune_ratio=0.5, epochs=4, seed=0, correction="unbiased")
    for batch in h.batch_sampler(BATCH):  # scored warm-up
        handle_scores(model, h, x_all[:, batch], y_all[batch], np.array(batch))
    batches = list(h.batch_sampler(BATCH))
    plan = h.plan(1)
    assert plan.phase == "prune" and np.ptp(plan.weights) > 0.1
    idx = np.array(batches[0])
    bound = handle_scores(model, h, x_all[:, idx], y_all[idx], idx)
    truth = true_norms(reference, x_all[:, idx], y_all[idx], [h.readout_name])
    assert_bounds(bound, truth)
    # the weight is undone exactly: the same scores as with weight 1 (a warm-up plan)
    unweighted = attach_fresh(unweighted_model, n=n)
    expected = handle_scores(unweighted_model, unweighted, x_all[:, idx], y_all[idx], idx)
    np.testing.assert_allclose(bound, expected, rtol=1e-5)


# -- 3. training on real data through a DataLoader --------------------------------------


def digits() -> tuple[TensorDataset, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits: a training set of 1437 and a held-out set of 360."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = order[:1437], order[1437:]
    return TensorDataset(x[train], y[train]), x[test], y[test]


def encode(x: torch.Tensor) -> torch.Tensor:
    """Direct-current encoding: the scaled image repeated over ``T`` steps, ``[T, B, 64]``."""
    return (4.0 * x).unsqueeze(0).repeat(T, 1, 1)


def digits_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    body = nn.Sequential(
        layer.Linear(64, 128), neuron.LIFNode(surrogate_function=surrogate.ATan()), layer.Linear(128, 10)
    )
    functional.set_step_mode(body, "m")
    return TimeMean(body)


def train_epoch(
    model: nn.Module, h: sadp_core.Pruner, loader: DataLoader, optimizer: torch.optim.Optimizer
) -> list[int]:
    """One pass over the loader (the handle's next epoch); returns the size of each batch."""
    sizes = []
    for idx, (x, y) in loader:
        loss = h.weighted_loss(F.cross_entropy(model(encode(x)), y, reduction="none"), idx)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        functional.reset_net(model)
        sizes.append(len(idx))
    return sizes


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model(encode(x)).argmax(1)
    functional.reset_net(model)
    model.train()
    return (predicted == y).float().mean().item()


def test_training_on_digits_follows_the_schedule_and_learns() -> None:
    """Four epochs (warm-up, prune, prune, anneal) on load_digits with a 2-worker DataLoader.

    Each epoch trains on the planned number of examples, the examples trained in an epoch
    get new scores (the others keep theirs), and the network learns.
    """
    train_set, x_test, y_test = digits()
    model = digits_model(seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    h = sadp_core.attach(
        model, num_examples=len(train_set), prune_ratio=0.5, epochs=4, seed=0, anneal_fraction=0.25
    )
    loader = DataLoader(
        h.indexed(train_set), batch_sampler=h.batch_sampler(64), num_workers=2, pin_memory=False
    )
    expected_sizes = {"warmup": len(train_set), "prune": h.budget, "anneal": len(train_set)}
    accuracies, phases, previous = [], [], np.array(h.scores)
    assert np.isnan(previous).all()
    for epoch in range(4):
        seen = sum(train_epoch(model, h, loader, optimizer))
        plan = h.plan(epoch)
        phases.append(plan.phase)
        assert seen == len(plan.indices) == expected_sizes[plan.phase]
        scores = np.array(h.scores)
        trained = np.zeros(len(train_set), dtype=bool)
        trained[plan.indices] = True
        assert np.isfinite(scores[trained]).all() and (scores[trained] > 0).all()
        assert np.mean(scores[trained] != previous[trained]) > 0.99
        np.testing.assert_array_equal(scores[~trained], previous[~trained])
        previous = scores
        accuracies.append(accuracy(model, x_test, y_test))
    assert phases == ["warmup", "prune", "prune", "anneal"]
    assert 0 < h.budget < len(train_set)
    assert accuracies[-1] > 0.8, accuracies  # chance is 0.1
    assert accuracies[-1] > accuracies[0] + 0.08, accuracies


def test_sampler_length_is_the_length_of_the_next_pass() -> None:
    """``len(loader)`` before a pass equals the batches that pass yields (tqdm and LR schedules read it)."""
    train_set, _, _ = digits()
    small = TensorDataset(*train_set[:200])
    model = digits_model(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    h = sadp_core.attach(model, num_examples=len(small), prune_ratio=0.5, epochs=3, seed=0)
    loader = DataLoader(h.indexed(small), batch_sampler=h.batch_sampler(20))
    announced, yielded = [], []
    for _ in range(3):  # warm-up (200 examples), then two pruned epochs (100)
        announced.append(len(loader))
        yielded.append(len(train_epoch(model, h, loader, optimizer)))
    assert yielded == [10, 5, 5]
    assert announced == yielded


# -- 4. resume ------------------------------------------------------------------------


def _resumable_run(seed: int, train_set: TensorDataset):
    model = digits_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    h = sadp_core.attach(
        model, num_examples=len(train_set), prune_ratio=0.5, epochs=5, seed=0, anneal_fraction=0.2
    )
    loader = DataLoader(h.indexed(train_set), batch_sampler=h.batch_sampler(32))
    return model, optimizer, h, loader


def test_resume_continues_with_identical_plans() -> None:
    """Train 2 epochs, checkpoint, rebuild everything, load, continue: the remaining plans and
    the final score table equal those of an uninterrupted run bit for bit."""
    train_set, _, _ = digits()
    train_set = TensorDataset(*train_set[:256])

    model, optimizer, h, loader = _resumable_run(0, train_set)
    uninterrupted = []
    for epoch in range(5):
        train_epoch(model, h, loader, optimizer)
        uninterrupted.append(h.plan(epoch))
    final_scores = np.array(h.scores)

    model, optimizer, h, loader = _resumable_run(0, train_set)
    for _ in range(2):
        train_epoch(model, h, loader, optimizer)
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "sadp": h.state_dict()}, buffer
    )
    h.detach()
    del model, optimizer, h, loader

    model, optimizer, h, loader = _resumable_run(1, train_set)  # other initial weights: the load must matter
    buffer.seek(0)
    # weights_only=False: the handle's state holds numpy arrays (see the torch.load test below)
    checkpoint_ = torch.load(buffer, weights_only=False)
    model.load_state_dict(checkpoint_["model"])
    optimizer.load_state_dict(checkpoint_["optimizer"])
    h.load_state_dict(checkpoint_["sadp"])
    for epoch in range(2, 5):
        train_epoch(model, h, loader, optimizer)
        resumed, reference = h.plan(epoch), uninterrupted[epoch]
        assert resumed.phase == reference.phase
        for a, b in zip(resumed[2:], reference[2:], strict=True):
            np.testing.assert_array_equal(a, b)
    assert [p.phase for p in uninterrupted] == ["warmup", "prune", "prune", "prune", "anneal"]
    np.testing.assert_array_equal(np.array(h.scores), final_scores)


def test_state_dict_loads_with_torch_load_defaults() -> None:
    """A checkpoint holding ``h.state_dict()`` loads with ``torch.load``'s default ``weights_only=True``."""
    model = make_model("multi_step", "LIF")
    h = attach_fresh(model)
    x, y = make_data("multi_step")
    handle_scores(model, h, x, y, np.arange(BATCH))
    buffer = io.BytesIO()
    torch.save({"sadp": h.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer)["sadp"]
    restored = attach_fresh(make_model("multi_step", "LIF"))
    restored.load_state_dict(state)
    np.testing.assert_array_equal(np.array(restored.scores), np.array(h.scores))


# -- 5. activation checkpointing --------------------------------------------------------


class CheckpointedMLP(nn.Module):
    """Multi-step MLP whose hidden block and readout block may each run under ``checkpoint``."""

    def __init__(self, use_checkpoint: bool) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.hidden = nn.Sequential(layer.Linear(FEATURES, HIDDEN), NEURONS["LIF"]())
        self.head = nn.Sequential(layer.Linear(HIDDEN, CLASSES))
        functional.set_step_mode(self, "m")

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        # start from the resting state, so that the recomputation in backward (which finds
        # the neurons in their final state) repeats the forward pass exactly
        functional.reset_net(self.hidden)
        return self.hidden(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_checkpoint:
            return self.head(self._hidden(x)).mean(0)
        # without early stop the recomputation runs each block to its end, forward hooks included
        # (by default it stops once the saved tensors are back, before the readout's hook runs)
        with set_checkpoint_early_stop(False):
            hidden = checkpoint(self._hidden, x, use_reentrant=False)
            return checkpoint(self.head, hidden, use_reentrant=False).mean(0)


@pytest.mark.parametrize(
    "options",
    [{}, {"readout": "head.0"}, {"scope": "all"}],
    ids=["auto_readout", "named_readout", "scope_all"],
)
def test_activation_checkpointing_records_each_layer_once(options: dict) -> None:
    """Forward passes recomputed in backward are not recorded again: the scores of two steps
    equal those without checkpointing."""
    torch.manual_seed(0)
    plain = CheckpointedMLP(use_checkpoint=False)
    checkpointed = copy.deepcopy(plain)
    checkpointed.use_checkpoint = True
    x, y = make_data("multi_step", 2 * BATCH)
    handles = attach_fresh(plain, n=2 * BATCH, **options), attach_fresh(checkpointed, n=2 * BATCH, **options)
    for batch in (np.arange(BATCH), np.arange(BATCH, 2 * BATCH)):  # a stray record would spoil step 2
        expected = handle_scores(plain, handles[0], x[:, batch], y[batch], batch)
        scores = handle_scores(checkpointed, handles[1], x[:, batch], y[batch], batch)
        np.testing.assert_allclose(scores, expected, rtol=1e-5)


# -- 6. autocast ----------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_bfloat16_autocast_scores_are_close_to_float32(architecture: str) -> None:
    """Under ``torch.autocast("cpu", bfloat16)`` the scores are finite and close to the float32 ones.

    Tolerance: bfloat16 keeps 8 significant bits (relative rounding 2^-8 = 0.4% per value), so
    the error signal and typical scores move by well under 1% (median bound below). The same
    rounding moves a few membrane potentials across the threshold (3 of 2048 spikes flip in
    the MLP, ~50 of 22k in the conv net); one flipped spike changes an example's
    ``||s_t||^2`` by 1 out of ~10-30, i.e. its score by a few percent: hence 5% per example.
    """
    model = make_model(architecture, "LIF")
    model_bf16 = copy.deepcopy(model)
    x, y = make_data(architecture)
    expected = handle_scores(model, attach_fresh(model), x, y, np.arange(BATCH))
    h = attach_fresh(model_bf16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = F.cross_entropy(model_bf16(x), y, reduction="none")
    h.weighted_loss(losses, torch.arange(BATCH)).backward()
    functional.reset_net(model_bf16)
    scores = np.array(h.scores)
    assert np.isfinite(scores).all()
    deviation = np.abs(scores / expected - 1)
    assert np.median(deviation) < 0.01, deviation
    assert deviation.max() < 0.05, deviation


# -- 7. errors ------------------------------------------------------------------------


def test_unknown_readout_name_raises() -> None:
    """``readout=`` naming no Linear/Conv layer is an error at attach time."""
    with pytest.raises(SADPError, match="missing"):
        sadp_core.attach(make_model("multi_step", "LIF"), num_examples=10, epochs=2, readout="missing")


def _readout_with_batchnorm(kind: str) -> nn.Module:
    if kind == "seq_to_ann":
        readout = layer.SeqToANNContainer(nn.Linear(HIDDEN, CLASSES), nn.BatchNorm1d(CLASSES))
    else:
        readout = nn.Sequential(layer.Linear(HIDDEN, CLASSES), layer.BatchNorm1d(CLASSES))
    body = nn.Sequential(layer.Linear(FEATURES, HIDDEN), NEURONS["LIF"](), readout)
    functional.set_step_mode(body, "m")
    return TimeMean(body)


@pytest.mark.parametrize("kind", ["seq_to_ann", "explicit"])
def test_batchnorm_in_training_mode_after_the_readout_warns(kind: str) -> None:
    """A training-mode BatchNorm right after the readout mixes examples: SADPWarning; eval mode: silence."""
    torch.manual_seed(0)
    model = _readout_with_batchnorm(kind)
    x, y = make_data("multi_step")
    h = attach_fresh(model)
    with pytest.warns(SADPWarning, match="BatchNorm"):
        handle_scores(model, h, x, y, np.arange(BATCH))

    torch.manual_seed(0)
    model = _readout_with_batchnorm(kind)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.eval()
    h = attach_fresh(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SADPWarning)
        handle_scores(model, h, x, y, np.arange(BATCH))


def test_model_without_spikingjelly_neuron_raises() -> None:
    """A plain ANN is refused by the SpikingJelly adapter (and by ``sadp_core.attach``)."""
    ann = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
    with pytest.raises(SADPError, match="no SpikingJelly spiking layer"):
        sj_adapter.attach(ann, num_examples=10, epochs=2)
    with pytest.raises(SADPError, match="no adapter"):
        sadp_core.attach(ann, num_examples=10, epochs=2)


@pytest.mark.parametrize("architecture", LINEAR_ARCHITECTURES)
def test_forgetting_weighted_loss_raises_a_clear_error(architecture: str) -> None:
    """A backward pass on a batch of another size without ``h.weighted_loss``: SADPError naming it."""
    model = make_model(architecture, "LIF")
    x, y = make_data(architecture)
    h = attach_fresh(model)
    handle_scores(model, h, x, y, np.arange(BATCH))
    with pytest.raises(SADPError, match="weighted_loss"):
        F.cross_entropy(model(x[:, :10]), y[:10]).backward()
    functional.reset_net(model)


def test_forgetting_weighted_loss_on_a_same_size_batch_does_not_corrupt_scores() -> None:
    """Without ``h.weighted_loss``, a batch of the same size must not be scored as the previous batch."""
    model = make_model("multi_step", "LIF")
    x, y = make_data("multi_step", 2 * BATCH)
    h = attach_fresh(model, n=2 * BATCH)
    first = np.arange(BATCH)
    handle_scores(model, h, x[:, first], y[first], first)
    before = np.array(h.scores)
    with pytest.raises(SADPError, match="weighted_loss"):
        F.cross_entropy(model(x[:, BATCH:]), y[BATCH:]).backward()
    functional.reset_net(model)
    np.testing.assert_array_equal(np.array(h.scores), before)


# -- 8. life cycle ----------------------------------------------------------------------


def hook_counts(model: nn.Module) -> list[tuple[str, type, int, int, int]]:
    """Per submodule: its class (which the handle swaps on a traced Linear) and its hooks."""
    return [
        (name, type(m), len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for name, m in model.named_modules()
    ]


def test_detach_removes_every_hook() -> None:
    """After ``detach()`` the model has the hooks it had before ``attach``, and records no scores."""
    model = make_model("conv", "LIF")
    before = hook_counts(model)
    x, y = make_data("conv")
    h = attach_fresh(model)
    assert hook_counts(model) != before
    handle_scores(model, h, x, y, np.arange(BATCH))
    h.detach()
    assert hook_counts(model) == before
    recorded = np.array(h.scores)
    handle_scores(model, h, x, y, np.arange(BATCH))  # weighted_loss still works, nothing is recorded
    np.testing.assert_array_equal(np.array(h.scores), recorded)


def test_context_manager_attaches_and_detaches() -> None:
    """``with sadp_core.attach(...) as h:`` records scores inside and removes the hooks on exit."""
    model = make_model("multi_step", "PLIF")
    before = hook_counts(model)
    x, y = make_data("multi_step")
    with sadp_core.attach(model, num_examples=BATCH, epochs=2, seed=0) as h:
        h.plan(0)
        scores = handle_scores(model, h, x, y, np.arange(BATCH))
        assert np.isfinite(scores).all() and (scores > 0).all()
    assert hook_counts(model) == before


# -- on a GPU (nox -s gpu; deselected elsewhere) -------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("architecture", ["multi_step", "single_step", "conv"])
def test_bound_holds_on_cuda(architecture: str) -> None:
    """The same bound check with model, data and trace on a CUDA device (SpikingJelly's
    kernels follow the device); the scores land in the host table when backward returns."""
    device = torch.device("cuda")
    model = make_model(architecture, "LIF").to(device)
    reference = copy.deepcopy(model)
    x, y = (tensor.to(device) for tensor in make_data(architecture))
    h = attach_fresh(model)
    idx = np.arange(BATCH)
    bound = handle_scores(model, h, x, y, idx)
    assert_bounds(bound, true_norms(reference, x, y, [h.readout_name]))
