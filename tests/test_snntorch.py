"""The snnTorch adapter on real snnTorch models (DESIGN.md sections 2, 6 and 8).

Ground truth throughout: a deep copy of the model made before ``attach``, run one example
at a time (forward, the same unweighted per-example loss, backward), and the norm of the
tapped layers' weight and bias gradients concatenated. snnTorch keeps hidden state in
the neurons, and ``snntorch.utils.reset`` only reaches neurons registered in the class-level
``SpikingNeuron.instances`` list (a deep copy is not registered), so :func:`reset_states`
also resets every neuron of the model itself.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import snntorch
import snntorch.functional as SF
import snntorch.utils
import torch
import torch.nn.functional as F
from sadp_core.adapters import snntorch as snntorch_adapter
from sadp_core.adapters._torch_trace import is_traced
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sadp_core
from sadp_core import SADPError, SADPWarning

torch.set_num_threads(1)

T = 4  # time steps
FEATURES, HIDDEN, CLASSES = 64, 32, 10
BATCH = 16
N = 48  # examples in the synthetic data sets
GAIN = 3.0  # weight scale of the test models (see build)
FLOAT_SLACK = 1e-5  # relative slack of a float32 bound against a float64 truth


# -- helpers ---------------------------------------------------------------------------


def reset_states(net: nn.Module) -> None:
    """Clear the hidden state of every snnTorch neuron of ``net`` (deep copies included)."""
    snntorch.utils.reset(net)
    for module in net.modules():
        if isinstance(module, snntorch.SpikingNeuron) and hasattr(module, "reset_mem"):
            module.reset_mem()


def hook_count(net: nn.Module) -> int:
    """Module hooks of every kind on every submodule of ``net``, plus the submodules whose
    class the handle swapped for a traced one."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        + is_traced(m)
        for m in net.modules()
    )


def tappable_layers(net: nn.Module) -> list[str]:
    """Every Linear and Conv layer of ``net`` except the recurrent layers of RLeaky/RSynaptic."""
    return [
        name
        for name, module in net.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d)) and not name.endswith("recurrent")
    ]


def grad_norm(net: nn.Module, layers: list[str]) -> float:
    """Norm of the weight and bias gradients of ``layers`` concatenated."""
    pieces = []
    for name in layers:
        module = net.get_submodule(name)
        for param in (module.weight, module.bias):
            if param is not None:
                grad = param.grad if param.grad is not None else torch.zeros_like(param)
                pieces.append(grad.flatten().double())
    return float(torch.linalg.vector_norm(torch.cat(pieces)))


def true_norms(case: Case, net: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str]) -> np.ndarray:
    """Per-example gradient norm of ``layers``: one example at a time, unweighted loss."""
    norms = []
    for i in range(x.shape[0]):
        net.zero_grad(set_to_none=True)
        case.loss(case.run(net, x[i : i + 1]), y[i : i + 1]).sum().backward()
        norms.append(grad_norm(net, layers))
    net.zero_grad(set_to_none=True)
    return np.array(norms)


def scored_step(
    h: sadp_core.Pruner, case: Case, net: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray
):
    """One training step through the handle (no optimizer); returns the batch's scores."""
    losses = case.loss(case.run(net, x[idx]), y[idx])
    h.weighted_loss(losses, idx).backward()
    return np.array(h.scores[idx])


def scored_step_reference(
    case: Case, reference: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray
):
    """The scores a fresh handle on ``reference`` gives the batch ``idx`` (its first step)."""
    model = copy.deepcopy(reference)
    h = sadp_core.attach(model, num_examples=N, epochs=4)
    h.plan(0)
    return scored_step(h, case, model, x, y, idx)


def first_batch(h: sadp_core.Pruner, size: int = BATCH) -> np.ndarray:
    """The first ``size`` indices of the warm-up plan (epoch 0)."""
    return np.array(h.plan(0).indices[:size])


def assert_bound(scores: np.ndarray, truth: np.ndarray) -> None:
    """Every score is at least the true norm (float32 slack), and the truth is not trivial."""
    assert np.all(np.isfinite(scores)), scores
    assert np.all(truth > 0), truth
    assert np.all(scores >= truth * (1 - FLOAT_SLACK)), (scores / truth).round(6)


# -- models ----------------------------------------------------------------------------


class ExplicitLeaky(nn.Module):
    """Explicit-state Leaky MLP with a Leaky output neuron; returns the output membrane [T, B, C]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, HIDDEN)
        self.lif1 = snntorch.Leaky(beta=0.9)
        self.fc2 = nn.Linear(HIDDEN, CLASSES)
        self.lif2 = snntorch.Leaky(beta=0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chunk(x, None, T)[0]

    def chunk(self, x: torch.Tensor, state: tuple | None, steps: int) -> tuple[torch.Tensor, tuple]:
        """``steps`` steps from ``state`` (None: rest); returns the membranes and the last state."""
        mem1, mem2 = state if state is not None else (self.lif1.reset_mem(), self.lif2.reset_mem())
        record = []
        for _ in range(steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            _, mem2 = self.lif2(self.fc2(spk1), mem2)
            record.append(mem2)
        return torch.stack(record), (mem1, mem2)


class ExplicitRLeaky(nn.Module):
    """RLeaky hidden layer defined after the readout, so that its ``.recurrent`` Linear is the
    last Linear of the model: a "last nn.Linear" rule would pick it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, CLASSES)
        self.lif2 = snntorch.Leaky(beta=0.9)
        self.rlif1 = snntorch.RLeaky(beta=0.9, linear_features=HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk1, mem1 = self.rlif1.reset_mem()
        mem2 = self.lif2.reset_mem()
        record = []
        for t in range(T):
            spk1, mem1 = self.rlif1(self.fc1(x[:, t]), spk1, mem1)
            _, mem2 = self.lif2(self.fc2(spk1), mem2)
            record.append(mem2)
        return torch.stack(record)


class SequenceLinearLeaky(nn.Module):
    """Two snnTorch 1.0 ``LinearLeaky`` sequence neurons on ``[T, B, F]``; returns the membrane."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = snntorch.LinearLeaky(beta=0.9, in_features=FEATURES, out_features=HIDDEN)
        self.l2 = snntorch.LinearLeaky(beta=0.9, in_features=HIDDEN, out_features=CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk1, _ = self.l1(x)
        _, mem2 = self.l2(spk1)
        return mem2


class ConvNet(nn.Module):
    """Conv2d + Leaky + Linear readout + Leaky on 8x8 images, direct-current input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snntorch.Leaky(beta=0.9)
        self.fc = nn.Linear(4 * 8 * 8, CLASSES)
        self.lif2 = snntorch.Leaky(beta=0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        record = []
        for _ in range(T):
            spk1, mem1 = self.lif1(self.conv(x), mem1)
            _, mem2 = self.lif2(self.fc(spk1.flatten(1)), mem2)
            record.append(mem2)
        return torch.stack(record)


def run_sequential(net: nn.Module, x: torch.Tensor, record: int) -> torch.Tensor:
    """snnTorch's usual loop over the steps of ``x`` [B, T, F] with init_hidden neurons:
    reset, call the net once per step, stack output ``record`` (0: spikes, -1: membrane)."""
    reset_states(net)
    outputs = [net(x[:, t])[record] for t in range(x.shape[1])]
    return torch.stack(outputs)


def run_time_major(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sequence models take ``[T, B, F]``; the data are stored ``[B, T, F]``."""
    return net(x.transpose(0, 1))


def time_mean_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.mean(0), y, reduction="none")


@dataclass(frozen=True)
class Case:
    """One architecture: how to build it, make its input, run it and score its output."""

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], torch.Tensor]  # [N, ...] examples
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # -> [B]
    readout: str  # the readout attach() must choose


def current(generator: torch.Generator) -> torch.Tensor:
    return 2.0 * torch.rand(N, FEATURES, generator=generator)


def spikes(generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(N, T, FEATURES, generator=generator) < 0.3).float()


def images(generator: torch.Generator) -> torch.Tensor:
    return 3.0 * torch.rand(N, 1, 8, 8, generator=generator)


def sequential_leaky() -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN),
        snntorch.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(HIDDEN, CLASSES),
        snntorch.Leaky(beta=0.9, init_hidden=True, output=True),
    )


def sequential_synaptic() -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN),
        snntorch.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
        nn.Linear(HIDDEN, CLASSES),
        snntorch.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, output=True),
    )


def sequential_rsynaptic() -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN),
        snntorch.RSynaptic(alpha=0.8, beta=0.9, linear_features=HIDDEN, init_hidden=True),
        nn.Linear(HIDDEN, CLASSES),
        snntorch.Leaky(beta=0.9, init_hidden=True, output=True),
    )


def leaky_parallel() -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN),
        snntorch.LeakyParallel(HIDDEN, HIDDEN, beta=0.9),
        nn.Linear(HIDDEN, CLASSES),
    )


CASES = [
    Case("explicit_leaky", ExplicitLeaky, current, lambda net, x: net(x), time_mean_ce, "fc2"),
    Case(
        "sequential_leaky_rate", sequential_leaky, spikes,
        lambda net, x: run_sequential(net, x, 0), SF.ce_rate_loss(reduction="none"), "2",
    ),
    Case(
        "sequential_leaky_count", sequential_leaky, spikes,
        lambda net, x: run_sequential(net, x, 0), SF.ce_count_loss(reduction="none"), "2",
    ),
    Case(  # mse_membrane_loss(reduction="none") is [B, C]: averaged to one loss per example
        "sequential_leaky_mse_membrane", sequential_leaky, spikes, lambda net, x: run_sequential(net, x, -1),
        lambda out, y: SF.mse_membrane_loss(reduction="none")(out, y).mean(1), "2",
    ),
    Case(
        "synaptic", sequential_synaptic, spikes,
        lambda net, x: run_sequential(net, x, -1), SF.ce_rate_loss(reduction="none"), "2",
    ),
    Case(
        "rleaky", ExplicitRLeaky, spikes,
        lambda net, x: net(x), SF.ce_max_membrane_loss(reduction="none"), "fc2",
    ),
    Case(
        "rsynaptic", sequential_rsynaptic, spikes,
        lambda net, x: run_sequential(net, x, -1), SF.ce_rate_loss(reduction="none"), "2",
    ),
    Case(
        "linear_leaky", SequenceLinearLeaky, spikes,
        run_time_major, SF.ce_rate_loss(reduction="none"), "l2.linear",
    ),
    Case("leaky_parallel", leaky_parallel, spikes, run_time_major, time_mean_ce, "2"),
    Case("conv", ConvNet, images, lambda net, x: net(x), time_mean_ce, "fc"),
]  # fmt: skip
CASE_IDS = [case.name for case in CASES]
EXPLICIT = CASES[0]


def build(case: Case, seed: int = 0) -> nn.Module:
    """The case's model, seeded, with its Linear/Conv weights scaled up by ``GAIN`` so that
    every layer spikes at initialisation (the default init leaves spiking outputs silent)."""
    torch.manual_seed(seed)
    net = case.build()
    with torch.no_grad():
        for name in tappable_layers(net):
            net.get_submodule(name).weight.mul_(GAIN)
    return net


def setup(case: Case, seed: int = 0, **options):
    """Model, ground-truth copy (made before attach), data, and the attached handle."""
    net = build(case, seed)
    reference = copy.deepcopy(net)
    generator = torch.Generator().manual_seed(seed)
    x = case.inputs(generator)
    y = torch.randint(0, CLASSES, (N,), generator=generator)
    options = {"num_examples": N, "prune_ratio": 0.5, "epochs": 4, "seed": 0, **options}
    h = sadp_core.attach(net, **options)
    return net, reference, x, y, h


# -- 1. the bound, the exact score, scope="all" -------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bound_holds_for_every_example(case: Case) -> None:
    """score="bound": h.scores[idx] >= each example's true readout gradient norm, and the
    readout chosen is the expected layer (never an RLeaky/RSynaptic ``.recurrent``)."""
    net, reference, x, y, h = setup(case)
    assert h.readout_name == case.readout
    assert not h.readout_name.endswith("recurrent")
    idx = first_batch(h)
    scores = scored_step(h, case, net, x, y, idx)
    assert_bound(scores, true_norms(case, reference, x[idx], y[idx], [case.readout]))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_trace_holds_norms_not_spike_tensors(case: Case) -> None:
    """The trace is O(T * B) floats per tapped layer: one norm per (time step, example),
    never the layer's input or output tensors."""
    net, _, x, y, h = setup(case)
    idx = first_batch(h)
    losses = case.loss(case.run(net, x[idx]), y[idx])
    h.weighted_loss(losses, idx).backward()
    # until the scores are written: per call, the norms of input and error per row
    # (the same input-norm tensors are what the gradient hooks held between forward and backward)
    held = [tensor for _, _, kept, errors in h._pieces for tensor in (kept, errors)]
    assert 0 < sum(tensor.numel() for tensor in held) <= 2 * T * len(idx)
    assert all(tensor.dtype == torch.float32 and tensor.ndim <= 2 for tensor in held)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_exact_score_equals_true_norm(case: Case) -> None:
    """score="exact" (ghost norm) equals the true readout gradient norm to rtol 1e-4."""
    net, reference, x, y, h = setup(case, score="exact")
    idx = first_batch(h)
    scores = scored_step(h, case, net, x, y, idx)
    truth = true_norms(case, reference, x[idx], y[idx], [case.readout])
    np.testing.assert_allclose(scores, truth, rtol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_scope_all_bounds_all_layer_norm(case: Case) -> None:
    """scope="all": the score bounds the norm of every Linear/Conv gradient together
    (the recurrent layers of RLeaky/RSynaptic excluded)."""
    net, reference, x, y, h = setup(case, scope="all")
    idx = first_batch(h)
    scores = scored_step(h, case, net, x, y, idx)
    layers = tappable_layers(reference)
    assert len(layers) >= 2
    assert_bound(scores, true_norms(case, reference, x[idx], y[idx], layers))


def test_scope_all_with_and_without_bias() -> None:
    """scope="all" over a hidden Linear without bias and a readout with one: each layer's
    bound has its own bias term, and together they bound the whole gradient norm."""
    case = EXPLICIT
    net = build(case)
    net.fc1.bias = None  # the hidden layer has no bias, the readout has one
    reference = copy.deepcopy(net)
    generator = torch.Generator().manual_seed(0)
    x, y = case.inputs(generator), torch.randint(0, CLASSES, (N,), generator=generator)
    exact_net = copy.deepcopy(net)
    h = sadp_core.attach(net, num_examples=N, epochs=4, scope="all")
    idx = first_batch(h)
    scores = scored_step(h, case, net, x, y, idx)
    truth = true_norms(case, reference, x[idx], y[idx], ["fc1", "fc2"])
    assert_bound(scores, truth)
    exact = sadp_core.attach(exact_net, num_examples=N, epochs=4, scope="all", score="exact")
    np.testing.assert_allclose(
        scored_step(exact, case, exact_net, x, y, first_batch(exact)), truth, rtol=1e-4
    )


def test_conv_layer_as_readout() -> None:
    """A Conv2d passed as ``readout=`` (a module): the convolution bound holds."""
    case = CASES[CASE_IDS.index("conv")]
    net = build(case)
    reference = copy.deepcopy(net)
    generator = torch.Generator().manual_seed(0)
    x, y = images(generator), torch.randint(0, CLASSES, (N,), generator=generator)
    h = sadp_core.attach(net, num_examples=N, epochs=4, readout=net.conv)
    assert h.readout_name == "conv"
    idx = first_batch(h)
    scores = scored_step(h, case, net, x, y, idx)
    assert_bound(scores, true_norms(case, reference, x[idx], y[idx], ["conv"]))


# -- 2. loss weights and the batch-mean correction -------------------------------------


@pytest.mark.parametrize("case", CASES[:2], ids=CASE_IDS[:2])
def test_bound_holds_under_nonuniform_plan_weights(case: Case) -> None:
    """In a pruning epoch of method "sadp" the plan weights differ between examples; the
    handle undoes weight and batch mean, so the bound still holds against the unweighted truth.
    The unbiased correction gives spread weights from the first pruned epoch on."""
    net, reference, x, y, h = setup(case, correction="unbiased")
    for start in range(0, N, BATCH):  # warm-up epoch: every example gets a score
        scored_step(h, case, net, x, y, np.array(h.plan(0).indices[start : start + BATCH]))
    net.zero_grad()
    plan = h.plan(1)
    assert plan.phase == "prune"
    idx = np.array(plan.indices[:BATCH])
    weights = np.array(plan.weights[:BATCH])
    assert np.ptp(weights) > 0.05 * weights.mean(), weights
    scores = scored_step(h, case, net, x, y, idx)
    assert_bound(scores, true_norms(case, reference, x[idx], y[idx], [case.readout]))


def test_score_does_not_depend_on_batch_size() -> None:
    """The exact score of an example is the same in a batch of 16 and in a short batch of 3
    (the batch-mean correction follows B), and equals the truth."""
    case = EXPLICIT
    net, reference, x, y, h = setup(case, score="exact")
    idx = first_batch(h)
    full = scored_step(h, case, net, x, y, idx)
    short = scored_step(h, case, net, x, y, idx[:3])
    np.testing.assert_allclose(short, full[:3], rtol=1e-5)
    np.testing.assert_allclose(short, true_norms(case, reference, x[idx[:3]], y[idx[:3]], ["fc2"]), rtol=1e-4)


# -- 3. training on load_digits ----------------------------------------------------------


def digits() -> tuple[TensorDataset, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits scaled to [0, 1]: (train set of 1437, test images, test labels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images_ = torch.tensor(data.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[:1437], order[1437:]
    return TensorDataset(images_[train], labels[train]), images_[test], labels[test]


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        prediction = net(x).mean(0).argmax(1)
    net.train()
    return float((prediction == y).float().mean())


def test_training_on_digits_follows_the_schedule_and_learns() -> None:
    """DataLoader(h.indexed(ds), batch_sampler=h.batch_sampler(64), num_workers=2): each
    epoch trains exactly its plan (all N in warm-up and anneal, h.budget when pruned), the
    trained examples' scores change and the others keep theirs, and the net learns."""
    train, x_test, y_test = digits()
    torch.manual_seed(0)
    net = ExplicitLeaky()
    epochs = 4
    h = sadp_core.attach(
        net, num_examples=len(train), prune_ratio=0.5, epochs=epochs, seed=0, anneal_fraction=0.25
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    loader = DataLoader(h.indexed(train), batch_sampler=h.batch_sampler(64), num_workers=2)
    expected_sizes = {"warmup": len(train), "prune": h.budget, "anneal": len(train)}
    accuracies = []
    for epoch in range(epochs):
        before = np.array(h.scores)
        seen = []
        for idx, (x, y) in loader:
            h.weighted_loss(time_mean_ce(net(x), y), idx).backward()
            optimizer.step()
            optimizer.zero_grad()
            seen.append(idx.numpy())
        plan = h.plan(epoch)
        seen_all = np.concatenate(seen)
        assert len(seen_all) == expected_sizes[plan.phase]
        np.testing.assert_array_equal(seen_all, plan.indices)
        assert h.stats.epochs_planned == epoch + 1
        after = np.array(h.scores)
        assert np.all(np.isfinite(after[seen_all]))
        if epoch > 0:
            assert np.mean(after[seen_all] != before[seen_all]) > 0.99
            untouched = np.setdiff1d(np.arange(len(train)), seen_all)
            np.testing.assert_array_equal(after[untouched], before[untouched])
        accuracies.append(accuracy(net, x_test, y_test))
    assert plan.phase == "anneal"  # the last epoch's
    assert h.stats.examples_planned == 2 * len(train) + 2 * h.budget
    # measured with seeds 0-3: 0.68-0.76 after epoch 1, 0.91-0.93 at the end; chance is 0.1
    assert accuracies[-1] > 0.85, accuracies
    assert accuracies[-1] > accuracies[0] + 0.05, accuracies


# -- 4. resume ---------------------------------------------------------------------------


def train_epochs(h, net, optimizer, loader, epochs: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Train ``epochs`` passes; return each epoch's (plan.phase, plan.indices, plan.weights)."""
    plans = []
    for _ in range(epochs):
        for idx, (x, y) in loader:
            h.weighted_loss(time_mean_ce(net(x), y), idx).backward()
            optimizer.step()
            optimizer.zero_grad()
        plan = h.plan(h.stats.epochs_planned - 1)
        plans.append((plan.phase, plan.indices.copy(), plan.weights.copy()))
    return plans


def fresh_run(train: TensorDataset, epochs: int):
    torch.manual_seed(0)
    net = ExplicitLeaky()
    h = sadp_core.attach(net, num_examples=len(train), prune_ratio=0.5, epochs=epochs, seed=3)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    loader = DataLoader(h.indexed(train), batch_sampler=h.batch_sampler(50))
    return net, h, optimizer, loader


def test_resume_reproduces_the_remaining_plans() -> None:
    """Save after 2 epochs (handle, model, optimizer), load into a fresh model and handle, and
    continue: epochs 2..E have the same plans, bit for bit, as an uninterrupted run."""
    full, _, _ = digits()
    train = TensorDataset(*full[:400])
    epochs = 5
    net, h, optimizer, loader = fresh_run(train, epochs)
    uninterrupted = train_epochs(h, net, optimizer, loader, epochs)

    net, h, optimizer, loader = fresh_run(train, epochs)
    train_epochs(h, net, optimizer, loader, 2)
    buffer = io.BytesIO()
    torch.save(
        {"handle": h.state_dict(), "model": net.state_dict(), "optimizer": optimizer.state_dict()}, buffer
    )
    h.detach()
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)

    net, h, optimizer, loader = fresh_run(train, epochs)
    net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    h.load_state_dict(saved["handle"])
    resumed = train_epochs(h, net, optimizer, loader, epochs - 2)
    assert [phase for phase, _, _ in uninterrupted] == ["warmup"] + ["prune"] * (epochs - 1)
    assert len(resumed) == epochs - 2
    for (phase, indices, weights), (phase_resumed, indices_resumed, weights_resumed) in zip(
        uninterrupted[2:], resumed, strict=True
    ):
        assert phase_resumed == phase
        np.testing.assert_array_equal(indices_resumed, indices)
        np.testing.assert_array_equal(weights_resumed, weights)


# -- 5. errors and warnings --------------------------------------------------------------


def test_plain_torch_model_is_rejected() -> None:
    """A model without snnTorch neurons: attach() finds no adapter; the snnTorch adapter
    itself says there is no spiking layer."""
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(SADPError, match="no adapter"):
        sadp_core.attach(mlp, num_examples=10, epochs=2)
    with pytest.raises(SADPError, match="no snnTorch spiking layer"):
        snntorch_adapter.attach(mlp, num_examples=10, epochs=2)
    assert hook_count(mlp) == 0


def test_unknown_readout_lists_the_choices() -> None:
    """readout='nonexistent' names the layers that can be chosen (not RLeaky.recurrent)."""
    net = ExplicitRLeaky()
    with pytest.raises(SADPError, match="nonexistent") as error:
        sadp_core.attach(net, num_examples=10, epochs=2, readout="nonexistent")
    assert "choose one of" in str(error.value)
    assert "'fc1'" in str(error.value) and "'fc2'" in str(error.value)
    assert "recurrent" not in str(error.value)
    with pytest.raises(SADPError, match="choose one of"):
        sadp_core.attach(net, num_examples=10, epochs=2, readout="rlif1.recurrent")
    assert hook_count(net) == 0


class ReadoutDefinedFirst(nn.Module):
    """The readout is defined first and a hidden Linear last, but they run the other way."""

    def __init__(self) -> None:
        super().__init__()
        self.readout = nn.Linear(HIDDEN, CLASSES)
        self.lif = snntorch.Leaky(beta=0.9)
        self.hidden = nn.Linear(FEATURES, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = self.lif.reset_mem()
        record = []
        for _ in range(T):
            spk, mem = self.lif(self.hidden(x), mem)
            record.append(self.readout(spk))
        return torch.stack(record)


def test_ambiguous_readout_fails_at_first_backward() -> None:
    """Definition order and execution order disagree: the first backward raises, telling the
    user to pass readout=, and no score is written; readout='readout' then works."""
    torch.manual_seed(0)
    net = ReadoutDefinedFirst()
    generator = torch.Generator().manual_seed(0)
    x, y = current(generator), torch.randint(0, CLASSES, (N,), generator=generator)
    h = sadp_core.attach(net, num_examples=N, epochs=2)
    idx = first_batch(h)
    loss = h.weighted_loss(time_mean_ce(net(x[idx]), y[idx]), idx)
    with pytest.raises(SADPError, match="readout='readout'"):
        loss.backward()
    assert np.all(np.isnan(h.scores))
    h.detach()
    h = sadp_core.attach(net, num_examples=N, epochs=2, readout="readout")
    h.weighted_loss(time_mean_ce(net(x[idx]), y[idx]), first_batch(h)).backward()
    assert np.all(np.isfinite(h.scores[idx]))


def test_ambiguous_readout_keeps_failing_until_fixed() -> None:
    """After the ambiguous-readout error, the next step must not score the wrong layer
    silently (DESIGN section 6: the score table is never corrupted)."""
    torch.manual_seed(0)
    net = ReadoutDefinedFirst()
    generator = torch.Generator().manual_seed(0)
    x, y = current(generator), torch.randint(0, CLASSES, (N,), generator=generator)
    h = sadp_core.attach(net, num_examples=N, epochs=2)
    plan = h.plan(0)
    for start in (0, BATCH):
        idx = np.array(plan.indices[start : start + BATCH])
        loss = h.weighted_loss(time_mean_ce(net(x[idx]), y[idx]), idx)
        with pytest.raises(SADPError, match="ambiguous readout"):
            loss.backward()
    assert np.all(np.isnan(h.scores))


def test_batchnorm_after_readout_warns() -> None:
    """A BatchNorm1d in training mode right after the readout mixes examples: SADPWarning."""
    net = nn.Sequential(
        nn.Linear(FEATURES, HIDDEN),
        snntorch.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(HIDDEN, CLASSES),
        nn.BatchNorm1d(CLASSES),
        snntorch.Leaky(beta=0.9, init_hidden=True, output=True),
    )
    x = current(torch.Generator().manual_seed(0))
    h = sadp_core.attach(net, num_examples=N, epochs=2)
    assert h.readout_name == "2"
    reset_states(net)
    with pytest.warns(SADPWarning, match="BatchNorm"):
        net(x[first_batch(h)])


def test_bad_batches_are_rejected_and_leave_the_table_intact() -> None:
    """Indices not in the plan, no plan yet, out of range, losses of the wrong shape, and a
    dataset of the wrong length raise SADPError; no score is written."""
    case = EXPLICIT
    net = build(case)
    generator = torch.Generator().manual_seed(0)
    x, y = current(generator), torch.randint(0, CLASSES, (N,), generator=generator)
    h = sadp_core.attach(net, num_examples=N, prune_ratio=0.5, epochs=4, warmup_epochs=0)
    losses = case.loss(case.run(net, x[:4]), y[:4])
    with pytest.raises(SADPError, match="no plan yet"):
        h.weighted_loss(losses, np.arange(4))
    plan = h.plan(0)
    assert plan.phase == "prune" and len(plan.indices) == N // 2
    outside = np.setdiff1d(np.arange(N), plan.indices)[:4]
    inside = np.array(plan.indices[:4])
    h.weighted_loss(losses, torch.as_tensor(inside))  # the weight table of this plan is made
    for as_given in (np.asarray, torch.as_tensor):  # the checked path, and the fast one
        with pytest.raises(SADPError, match="not in the plan"):
            h.weighted_loss(losses, as_given(outside))
        for beyond in ([0, 1, 2, N], [0, 1, 2, -1]):
            with pytest.raises(SADPError, match=r"\[0, 48\)"):
                h.weighted_loss(losses, as_given(np.array(beyond)))
        for wrong in (losses[:3], losses[:, None], losses.sum(), torch.stack([losses, losses])):
            with pytest.raises(SADPError, match="losses must be a \\[B\\] tensor"):
                h.weighted_loss(wrong, as_given(inside))
    h._record_scores()  # (the one good call above named a batch but no backward ran)
    with pytest.raises(SADPError, match="num_examples=48"):
        h.indexed(TensorDataset(x[:-1], y[:-1]))
    assert np.all(np.isnan(h.scores))


def test_a_readout_call_with_rows_not_of_the_batch_is_refused() -> None:
    """A readout called on rows that are not a whole number of batches, after the first
    step, in a call that is not the first to get its error in the backward pass (so the lean
    path takes it): the error comes when the scores are written."""

    class TwoCalls(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(FEATURES, HIDDEN), snntorch.Leaky(beta=0.9)
            self.fc2 = nn.Linear(HIDDEN, CLASSES)
            self.extra_row = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            spikes, _ = self.lif1(self.fc1(x), self.lif1.init_leaky())
            rows = torch.cat([spikes, spikes[:1]]) if self.extra_row else spikes
            first = self.fc2(rows)[: x.shape[0]]  # its error arrives last in the backward pass
            return self.fc2(spikes) + first

    net = TwoCalls()
    h = sadp_core.attach(net, num_examples=N, epochs=2, readout="fc2")
    idx = torch.as_tensor(first_batch(h))
    x, y = torch.rand(N, FEATURES), torch.randint(0, CLASSES, (N,))
    h.weighted_loss(F.cross_entropy(net(x[idx]), y[idx], reduction="none"), idx).backward()
    assert np.isfinite(h.scores[idx]).all()  # the first step, with its checks, is fine
    net.extra_row = True
    h.weighted_loss(F.cross_entropy(net(x[idx]), y[idx], reduction="none"), idx).backward()
    with pytest.raises(SADPError, match="17 rows of trace for a batch of 16"):
        h.scores  # noqa: B018 (reading the table writes the scores)


# -- 6. detach -----------------------------------------------------------------------------


def test_detach_removes_every_hook() -> None:
    """After detach() no hook is left on any module and training no longer touches h.scores."""
    case = CASES[CASE_IDS.index("sequential_leaky_rate")]
    net, _, x, y, h = setup(case, scope="readout")
    assert hook_count(net) > 0
    idx = first_batch(h)
    scored_step(h, case, net, x, y, idx)
    before = np.array(h.scores)
    h.detach()
    assert len(net.get_submodule(h.readout_name)._forward_hooks) == 0
    assert hook_count(net) == 0
    losses = case.loss(case.run(net, x[idx]), y[idx])
    h.weighted_loss(losses, idx).backward()
    np.testing.assert_array_equal(h.scores, before)
    h.detach()  # a second detach is harmless


def test_context_manager_detaches() -> None:
    """``with sadp_core.attach(...) as h:`` scores inside the block and detaches at its end."""
    case = EXPLICIT
    net = build(case)
    generator = torch.Generator().manual_seed(0)
    x, y = current(generator), torch.randint(0, CLASSES, (N,), generator=generator)
    with sadp_core.attach(net, num_examples=N, epochs=2, scope="all") as h:
        assert hook_count(net) > 0
        scores = scored_step(h, case, net, x, y, first_batch(h))
        assert np.all(np.isfinite(scores))
    assert hook_count(net) == 0


# -- 7. torch.compile ----------------------------------------------------------------------


def test_bound_holds_under_torch_compile() -> None:
    """torch.compile(model) after attach (default backend, CPU): the bound holds on the
    first step (its checks) and on the steps after it (the traced Linear's hot path)."""
    case = EXPLICIT
    net, reference, x, y, h = setup(case)
    compiled = torch.compile(net)
    plan = h.plan(0)
    for step in range(2):
        idx = np.array(plan.indices[step * BATCH : (step + 1) * BATCH])
        losses = case.loss(compiled(x[idx]), y[idx])
        h.weighted_loss(losses, torch.as_tensor(idx)).backward()
        assert_bound(np.array(h.scores[idx]), true_norms(case, reference, x[idx], y[idx], [case.readout]))


def test_tensor_and_array_indices_give_the_same_scores() -> None:
    """Indices as a tensor (as a DataLoader yields them: weighted_loss's fast path) and as a
    numpy array (its fully checked path) give the same weights, loss and scores."""
    case = EXPLICIT
    net, reference, x, y, h = setup(case)
    other = copy.deepcopy(reference)
    h_other = sadp_core.attach(other, num_examples=N, epochs=4)
    plan, plan_other = h.plan(0), h_other.plan(0)
    np.testing.assert_array_equal(plan.indices, plan_other.indices)
    for step in range(3):
        idx = np.array(plan.indices[step * BATCH : (step + 1) * BATCH])
        fast = h.weighted_loss(case.loss(case.run(net, x[idx]), y[idx]), torch.as_tensor(idx))
        checked = h_other.weighted_loss(case.loss(case.run(other, x[idx]), y[idx]), idx)
        assert fast.item() == checked.item()
        fast.backward()
        checked.backward()
        np.testing.assert_array_equal(h.scores[idx], h_other.scores[idx])


def test_attached_model_copies_and_pickles_as_the_plain_model() -> None:
    """The readout's class is swapped while attached; copy.deepcopy and torch.save give the
    plain class back (a copy is not attached), and detach restores it on the model itself."""
    case = EXPLICIT
    net, _, x, _, h = setup(case)
    readout = net.get_submodule(h.readout_name)
    assert is_traced(readout) and isinstance(readout, nn.Linear)
    assert type(readout).__name__ == "Linear" and repr(readout).startswith("Linear(")
    copied = copy.deepcopy(net)  # (snnTorch's surrogates keep a whole model from pickling)
    assert type(copied.get_submodule(h.readout_name)) is nn.Linear
    reset_states(copied)
    reset_states(net)
    with torch.no_grad():
        torch.testing.assert_close(case.run(copied, x[:4]), case.run(net, x[:4]))
    buffer = io.BytesIO()
    torch.save(readout, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is nn.Linear
    torch.testing.assert_close(loaded.state_dict(), readout.state_dict())
    assert is_traced(net.get_submodule(h.readout_name))
    h.detach()
    assert type(net.get_submodule(h.readout_name)) is nn.Linear


def test_a_backward_with_create_graph_gives_the_same_scores() -> None:
    """``loss.backward(create_graph=True)`` (a gradient penalty, meta-learning): the errors
    then carry a graph; the scores are those of a plain backward, for steps on both paths."""
    case = EXPLICIT
    net, reference, x, y, h = setup(case)
    other = copy.deepcopy(reference)
    h_other = sadp_core.attach(other, num_examples=N, epochs=4)
    plan = h.plan(0)
    h_other.plan(0)
    for step in range(2):  # the first step's checked path, then the traced class's hot path
        idx = torch.as_tensor(plan.indices[step * BATCH : (step + 1) * BATCH])
        for model, handle, create_graph in ((net, h, True), (other, h_other, False)):
            model.zero_grad(set_to_none=True)
            losses = case.loss(case.run(model, x[idx]), y[idx])
            handle.weighted_loss(losses, idx).backward(create_graph=create_graph)
        np.testing.assert_allclose(h.scores[idx.numpy()], h_other.scores[idx.numpy()], rtol=1e-6)
    net.zero_grad(set_to_none=True)  # (create_graph leaves a cycle between parameters and grads)


# -- 8. truncated BPTT ---------------------------------------------------------------------


def test_truncated_bptt_accumulates_the_chunk_scores() -> None:
    """Two chunks of T/2 steps, a backward after each (state detached between them), both
    through weighted_loss with the same indices: the score after the second backward is the
    first chunk's score plus the second chunk's (measured by a fresh handle on a second copy),
    and bounds the norm of the accumulated readout gradient."""
    case = EXPLICIT
    net, reference, x, y, h = setup(case)
    second = copy.deepcopy(reference)
    idx = first_batch(h)
    xb, yb = x[idx], y[idx]
    half = T // 2

    out, state = net.chunk(xb, None, half)
    h.weighted_loss(time_mean_ce(out, yb), idx).backward()
    after_first = np.array(h.scores[idx])
    out, _ = net.chunk(xb, tuple(s.detach() for s in state), half)
    h.weighted_loss(time_mean_ce(out, yb), idx).backward()
    after_second = np.array(h.scores[idx])

    # the second chunk alone: a fresh handle on another copy, the first chunk run without grad
    h2 = sadp_core.attach(second, num_examples=N, epochs=4)
    with torch.no_grad():
        _, state = second.chunk(xb, None, half)
    out, _ = second.chunk(xb, state, half)
    h2.plan(0)
    h2.weighted_loss(time_mean_ce(out, yb), idx).backward()
    second_chunk = np.array(h2.scores[idx])

    assert np.all(after_second > after_first)
    np.testing.assert_allclose(after_second, after_first + second_chunk, rtol=1e-5)

    truth_first, truth_total = [], []
    for i in range(BATCH):
        reference.zero_grad(set_to_none=True)
        out, state = reference.chunk(xb[i : i + 1], None, half)
        time_mean_ce(out, yb[i : i + 1]).sum().backward()
        truth_first.append(grad_norm(reference, ["fc2"]))
        out, _ = reference.chunk(xb[i : i + 1], tuple(s.detach() for s in state), half)
        time_mean_ce(out, yb[i : i + 1]).sum().backward()  # gradients accumulate, as in the batch
        truth_total.append(grad_norm(reference, ["fc2"]))
    assert_bound(after_first, np.array(truth_first))
    assert_bound(after_second, np.array(truth_total))


@pytest.mark.parametrize(
    "sizes",
    [(8, 8, 8, 8), (8, 8, 4, 8)],
    ids=["equal batches", "a smaller batch"],
)
def test_scores_written_at_once_equal_scores_written_after_every_backward(sizes: tuple[int, ...]) -> None:
    """The scores wait as trace pieces and are written for many batches at once. A run of
    batches, the second the first again (truncated BPTT: its scores add up), gives the same
    table whether it is read after every backward pass or only at the end."""
    case = EXPLICIT
    net, other, x, y, h = setup(case)
    h_other = sadp_core.attach(other, num_examples=N, prune_ratio=0.5, epochs=4, seed=0)
    order = h.plan(0).indices
    np.testing.assert_array_equal(order, h_other.plan(0).indices)
    starts = [0, 0, *np.cumsum(sizes[1:-1])]  # the second batch is the first again
    batches = [np.array(order[start : start + size]) for start, size in zip(starts, sizes, strict=True)]
    for handle, model, read_every_time in ((h, net, True), (h_other, other, False)):
        for rows in batches:
            out, _ = model.chunk(x[rows], None, T)
            handle.weighted_loss(time_mean_ce(out, y[rows]), rows).backward()
            if read_every_time:
                assert np.isfinite(handle.scores[rows]).all()
    assert len(h_other._pieces) == T * len(batches)  # nothing written yet: a piece per readout call
    scored = np.unique(np.concatenate(batches))
    np.testing.assert_allclose(h_other.scores[scored], h.scores[scored], rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(h_other.scores), np.isnan(h.scores))
    third = build(case)
    first_alone = sadp_core.attach(third, num_examples=N, prune_ratio=0.5, epochs=4, seed=0)
    first_alone.plan(0)
    out, _ = third.chunk(x[batches[0]], None, T)  # one backward: half the repeated batch's score
    first_alone.weighted_loss(time_mean_ce(out, y[batches[0]]), batches[0]).backward()
    np.testing.assert_allclose(h.scores[batches[0]], 2 * first_alone.scores[batches[0]], rtol=1e-5)


def test_several_backward_passes_through_one_forward_keep_the_bound() -> None:
    """Two backward passes through the same graph (``retain_graph=True``), both through
    weighted_loss with the same indices, as in truncated BPTT without detaching the state
    between chunks: the readout gradient is the sum of both passes, so the score after the
    second pass must bound the norm of that accumulated gradient."""
    case = EXPLICIT
    net, reference, x, y, h = setup(case)
    idx = first_batch(h)
    half = T // 2

    def chunks(model: nn.Module, rows: np.ndarray, handle=None) -> None:
        out, state = model.chunk(x[rows], None, half)
        first = time_mean_ce(out, y[rows])
        (handle.weighted_loss(first, rows) if handle else first.sum()).backward(retain_graph=True)
        out, _ = model.chunk(x[rows], state, half)  # state NOT detached: chunk 2 reaches chunk 1
        second = time_mean_ce(out, y[rows])
        (handle.weighted_loss(second, rows) if handle else second.sum()).backward()

    chunks(net, idx, h)
    truth = []
    for i in idx:
        reference.zero_grad(set_to_none=True)
        chunks(reference, np.array([i]))
        truth.append(grad_norm(reference, ["fc2"]))
    assert_bound(np.array(h.scores[idx]), np.array(truth))


# -- 9. loss-based methods -----------------------------------------------------------------


def test_infobatch_scores_are_the_unweighted_losses() -> None:
    """method="infobatch" expects losses: no hook is installed, and after weighted_loss the
    scores are the unweighted per-example losses."""
    case = EXPLICIT
    net, _, x, y, h = setup(case, method="infobatch")
    assert h.expects == "loss"
    assert len(net.get_submodule(h.readout_name)._forward_hooks) == 0
    assert hook_count(net) == 0
    idx = first_batch(h)
    losses = case.loss(case.run(net, x[idx]), y[idx])
    h.weighted_loss(losses, idx).backward()
    np.testing.assert_allclose(h.scores[idx], losses.detach().double().numpy(), rtol=1e-6)


# -- 10. when a batch's scores are computed -------------------------------------------------


class LastStepReadout(nn.Module):
    """The readout runs at every step, but the output is the last step's readout only."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, HIDDEN)
        self.lif1 = snntorch.Leaky(beta=0.9)
        self.fc2 = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = self.lif1.reset_mem()
        for _ in range(T):
            spk, mem = self.lif1(self.fc1(x), mem)
            out = self.fc2(spk)
        return out


def last_step_setup():
    torch.manual_seed(0)
    net = LastStepReadout()
    reference = copy.deepcopy(net)
    generator = torch.Generator().manual_seed(0)
    x, y = current(generator), torch.randint(0, CLASSES, (N,), generator=generator)
    return net, reference, x, y, sadp_core.attach(net, num_examples=N, epochs=4)


def test_scores_are_in_place_when_backward_returns_for_a_last_step_loss() -> None:
    """DESIGN section 6: when backward() returns, h.scores[idx] holds the batch's scores, also
    when some readout outputs (steps 1..T-1 here) get no gradient; and they bound the truth."""
    net, reference, x, y, h = last_step_setup()
    idx = first_batch(h)
    h.weighted_loss(F.cross_entropy(net(x[idx]), y[idx], reduction="none"), idx).backward()
    scores = np.array(h.scores[idx])
    truth = []
    for i in idx:
        reference.zero_grad(set_to_none=True)
        F.cross_entropy(reference(x[i : i + 1]), y[i : i + 1]).backward()
        truth.append(grad_norm(reference, ["fc2"]))
    assert_bound(scores, np.array(truth))


def test_a_last_step_loss_trains_for_two_steps_without_error() -> None:
    """The readout is both defined and run last, so the second step must not be refused as
    an "ambiguous readout" (the first step's checks must use the first step's layers)."""
    net, _, x, y, h = last_step_setup()
    for start in (0, BATCH):
        idx = np.array(h.plan(0).indices[start : start + BATCH])
        h.weighted_loss(F.cross_entropy(net(x[idx]), y[idx], reduction="none"), idx).backward()
    assert h.readout_name == "fc2"


def test_scores_are_in_place_after_an_extra_forward_without_backward() -> None:
    """A grad-enabled training-mode forward that is never backpropagated (say, training
    accuracy on the whole set) must not delay or disturb the next step's scores."""
    case = EXPLICIT
    net, reference, x, y, h = setup(case)
    net(x)  # all N examples, no backward
    idx = first_batch(h)
    scores = scored_step(h, case, net, x, y, idx)
    np.testing.assert_allclose(scores, scored_step_reference(case, reference, x, y, idx), rtol=1e-5)


def test_same_indices_in_a_new_epoch_start_a_new_score() -> None:
    """Accumulation over backward passes is for one batch (truncated BPTT); the next epoch's
    batch is a new batch even with the same indices (N=1 here), so with the model unchanged
    its score stays the same instead of growing epoch after epoch."""
    case = EXPLICIT
    net = build(case)
    generator = torch.Generator().manual_seed(0)
    x, y = current(generator)[:1], torch.randint(0, CLASSES, (1,), generator=generator)
    h = sadp_core.attach(net, num_examples=1, prune_ratio=0.0, epochs=3)
    per_epoch = []
    for _ in range(3):
        for idx in h.batch_sampler(1):
            h.weighted_loss(case.loss(net(x[idx]), y[idx]), idx).backward()
        per_epoch.append(float(h.scores[0]))
    np.testing.assert_allclose(per_epoch, per_epoch[0], rtol=1e-6)


# -- 11. scores written in batches ---------------------------------------------------------


@pytest.mark.parametrize("replacement", [False, True])
def test_scores_written_in_groups_equal_scores_read_after_every_step(replacement: bool) -> None:
    """The handle writes scores to the table in groups of backward passes. Two identical
    runs, one reading the table after every step and one only at the end (100 steps per
    epoch, more than one group), end with the same table; when a plan repeats an example
    (sampling with replacement) its latest score is the one kept."""
    size, batch = 400, 4
    x = current(torch.Generator().manual_seed(1)).repeat(size // N + 1, 1)[:size]
    y = torch.randint(0, CLASSES, (size,), generator=torch.Generator().manual_seed(2))
    net = build(EXPLICIT)
    tables = []
    for read_every_step in (True, False):
        model = copy.deepcopy(net)
        h = sadp_core.attach(model, num_examples=size, prune_ratio=0.5, epochs=3, replacement=replacement)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)  # scores change from step to step
        latest = {}
        for epoch in range(2):
            plan = h.plan(epoch)
            for start in range(0, len(plan.indices), batch):
                idx = plan.indices[start : start + batch]
                optimizer.zero_grad()
                h.weighted_loss(time_mean_ce(model(x[idx]), y[idx]), idx).backward()
                optimizer.step()
                if read_every_step:
                    latest.update(zip(idx.tolist(), h.scores[idx].tolist(), strict=True))
        tables.append(np.array(h.scores))
        if read_every_step:
            assert all(tables[0][i] == value for i, value in latest.items())
    np.testing.assert_array_equal(tables[0], tables[1])
    assert np.isfinite(tables[1][plan.indices]).all()
    if replacement:
        assert len(np.unique(plan.indices)) < len(plan.indices)  # the case the test is about


# -- 12. on a GPU (nox -s gpu; deselected elsewhere) ---------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("case", [EXPLICIT, CASES[1]], ids=[EXPLICIT.name, CASES[1].name])
def test_bound_holds_on_cuda(case: Case) -> None:
    """The bound check with model, data and trace on a CUDA device; the scores land in
    the host table when backward returns."""
    device = torch.device("cuda")
    net, reference, x, y, h = setup(case)
    net.to(device), reference.to(device)
    x, y = x.to(device), y.to(device)
    idx = first_batch(h)
    scores = scored_step(h, case, net, x, y, idx)
    assert_bound(scores, true_norms(case, reference, x[idx], y[idx], [case.readout]))


def test_a_per_class_loss_is_refused_with_a_hint() -> None:
    """``mse_membrane_loss(reduction="none")`` gives [B, C]: weighted_loss says how to reduce it."""
    case = next(c for c in CASES if c.name == "sequential_leaky_mse_membrane")
    net, _, x, y, h = setup(case)
    idx = first_batch(h)
    per_class = SF.mse_membrane_loss(reduction="none")(case.run(net, x[idx]), y[idx])
    assert per_class.shape == (len(idx), CLASSES)
    with pytest.raises(SADPError, match=r"reduce the other axes per example"):
        h.weighted_loss(per_class, idx)
