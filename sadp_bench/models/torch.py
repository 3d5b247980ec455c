"""The torch networks of the benchmark (snnTorch and SpikingJelly), their loss and prediction.

Every model is a real network of its framework: snnTorch ``Leaky`` neurons (explicit
membrane state, so no class-level reset is needed) or SpikingJelly ``LIFNode`` neurons in
multi-step mode. Input is direct current: the first layer sees the static image once and
its output drives the neurons at each of ``T`` steps. Each model returns the readout's
per-step outputs ``[T, B, C]``.

Models of the SNN benchmark (``side`` = 28 for Fashion-MNIST, 8 for scikit-learn's digits):

- ``mlp``: Linear(side^2, 256) - LIF - Linear(256, 10), T = 4;
- ``conv``: Conv(1, 8, 3x3) - MaxPool 2 - LIF - Conv(8, 16, 3x3, stride 2) - LIF -
  Linear(16 (side/4)^2, 10), T = 4 (a small network: convolutions are dear on one CPU thread).

The third framework, ``jax``, has the snnTorch MLP and conv net in spyx
(:mod:`sadp_bench.models.jax`, imported only when asked for).

The networks of the overhead measurements (:mod:`sadp_bench.speed`), a 784-256-10 LIF
network with a LIF readout whose time-mean membrane is the output, are here too:
:class:`SnnTorchOverheadNet` and :class:`SpikingJellyOverheadNet`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import CLASSES

# -- snnTorch ------------------------------------------------------------------------------


class SnnTorchMLP(nn.Module):
    """snnTorch MLP: ``fc1`` on the static image, a ``Leaky`` layer for T steps, ``fc2`` readout."""

    def __init__(self, side: int, hidden: int, steps: int) -> None:
        super().__init__()
        import snntorch

        self.steps = steps
        self.fc1 = nn.Linear(side * side, hidden)
        self.lif1 = snntorch.Leaky(beta=0.9)
        self.fc2 = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = self.fc1(x)
        mem = torch.zeros_like(current)
        outputs = []
        for _ in range(self.steps):
            spikes, mem = self.lif1(current, mem)
            outputs.append(self.fc2(spikes))
        return torch.stack(outputs)

    def reset_state(self) -> None:
        """Nothing to do: the membrane state is explicit and local to ``forward``."""


class SnnTorchConv(nn.Module):
    """snnTorch conv SNN: conv1 and pooling once, then T steps of Leaky, strided conv2, Leaky, fc."""

    def __init__(self, side: int, hidden: int, steps: int) -> None:
        super().__init__()
        import snntorch

        self.steps = steps
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.lif1 = snntorch.Leaky(beta=0.9)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.lif2 = snntorch.Leaky(beta=0.9)
        self.fc = nn.Linear(16 * (side // 4) ** 2, CLASSES)
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = F.max_pool2d(self.conv1(x.view(-1, 1, self.side, self.side)), 2)
        mem1 = torch.zeros_like(current)
        mem2: torch.Tensor | None = None
        outputs = []
        for _ in range(self.steps):
            spikes1, mem1 = self.lif1(current, mem1)
            current2 = self.conv2(spikes1)
            mem2 = torch.zeros_like(current2) if mem2 is None else mem2
            spikes2, mem2 = self.lif2(current2, mem2)
            outputs.append(self.fc(spikes2.flatten(1)))
        return torch.stack(outputs)

    def reset_state(self) -> None:
        """Nothing to do: the membrane state is explicit and local to ``forward``."""


# -- SpikingJelly --------------------------------------------------------------------------


def _lif_node() -> nn.Module:
    """A multi-step ``LIFNode`` with snnTorch ``Leaky(beta=0.9)`` dynamics: ``v <- 0.9 v + x``,
    threshold 1, reset by subtraction, arctan surrogate (both frameworks train the same network)."""
    from spikingjelly.activation_based import neuron, surrogate

    return neuron.LIFNode(
        tau=10.0, decay_input=False, v_reset=None, surrogate_function=surrogate.ATan(), step_mode="m"
    )


class SpikingJellyMLP(nn.Module):
    """SpikingJelly MLP: ``fc1`` once, a multi-step ``LIFNode`` on ``[T, B, H]``, multi-step readout."""

    def __init__(self, side: int, hidden: int, steps: int) -> None:
        super().__init__()
        from spikingjelly.activation_based import layer

        self.steps = steps
        self.fc1 = layer.Linear(side * side, hidden, step_mode="s")
        self.sn1 = _lif_node()
        self.fc2 = layer.Linear(hidden, CLASSES, step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = self.fc1(x)
        return self.fc2(self.sn1(current.unsqueeze(0).repeat(self.steps, 1, 1)))

    def reset_state(self) -> None:
        """SpikingJelly neurons keep their state: reset it after every batch."""
        from spikingjelly.activation_based import functional

        functional.reset_net(self)


class SpikingJellyConv(nn.Module):
    """SpikingJelly conv SNN, multi-step after the first convolution (see :class:`SnnTorchConv`)."""

    def __init__(self, side: int, hidden: int, steps: int) -> None:
        super().__init__()
        from spikingjelly.activation_based import layer

        self.steps, self.side = steps, side
        self.conv1 = layer.Conv2d(1, 8, 3, padding=1, step_mode="s")
        self.pool1 = layer.MaxPool2d(2, step_mode="s")
        self.body = nn.Sequential(
            _lif_node(),
            layer.Conv2d(8, 16, 3, stride=2, padding=1, step_mode="m"),
            _lif_node(),
            layer.Flatten(step_mode="m"),
            layer.Linear(16 * (side // 4) ** 2, CLASSES, step_mode="m"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = self.pool1(self.conv1(x.view(-1, 1, self.side, self.side)))
        return self.body(current.unsqueeze(0).repeat(self.steps, 1, 1, 1, 1))

    def reset_state(self) -> None:
        """SpikingJelly neurons keep their state: reset it after every batch."""
        from spikingjelly.activation_based import functional

        functional.reset_net(self)


_BUILDERS: dict[tuple[str, str], type[nn.Module]] = {
    ("snntorch", "mlp"): SnnTorchMLP,
    ("snntorch", "conv"): SnnTorchConv,
    ("spikingjelly", "mlp"): SpikingJellyMLP,
    ("spikingjelly", "conv"): SpikingJellyConv,
}


def build_model(framework: str, model: str, side: int, *, hidden: int = 256, steps: int = 4) -> nn.Module:
    """A fresh model; seed torch first for a reproducible initialisation."""
    try:
        builder = _BUILDERS[(framework, model)]
    except KeyError:
        raise ValueError(f"no {model!r} model for framework {framework!r}") from None
    return builder(side, hidden, steps)


def reset(model: nn.Module) -> None:
    """Clear the neuron state of a benchmark model (a no-op for the snnTorch ones)."""
    model.reset_state()


def per_example_loss(outputs: torch.Tensor, labels: torch.Tensor, kind: str = "rate") -> torch.Tensor:
    """``[B]`` losses from readout outputs ``[T, B, C]``.

    ``"rate"``: cross-entropy at every step, averaged over steps (snnTorch's ``ce_rate_loss``
    per example): the error reaching the readout differs between steps. ``"mean"``:
    cross-entropy of the time-mean output, whose readout error is the same at every step
    (DESIGN.md section 9, point 1).
    """
    steps, batch = outputs.shape[:2]
    if kind == "mean":
        return F.cross_entropy(outputs.mean(0), labels, reduction="none")
    losses = F.cross_entropy(outputs.flatten(0, 1), labels.repeat(steps), reduction="none")
    return losses.view(steps, batch).mean(0)


def predict(outputs: torch.Tensor) -> torch.Tensor:
    """Class predictions from ``[T, B, C]`` readout outputs (the time-mean's argmax)."""
    return outputs.mean(0).argmax(1)


# -- the networks of the overhead measurements ----------------------------------------------


class SnnTorchOverheadNet(nn.Module):
    """snnTorch LIF network 784-256-10 with a ``Leaky`` readout; returns the time-mean membrane.

    ``fc1`` runs at every time step (as in the snnTorch tutorials), or once before the loop
    (``hoisted``: its input is the same at every step, the cheapest step of the network).
    """

    def __init__(self, steps: int, hoisted: bool = False) -> None:
        super().__init__()
        import snntorch as snn

        self.steps, self.hoisted = steps, hoisted
        self.fc1, self.lif1 = nn.Linear(784, 256), snn.Leaky(beta=0.9)
        self.fc2, self.lif2 = nn.Linear(256, 10), snn.Leaky(beta=0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        outputs, current = [], self.fc1(x) if self.hoisted else None
        for _ in range(self.steps):
            spikes, mem1 = self.lif1(current if self.hoisted else self.fc1(x), mem1)
            _, mem2 = self.lif2(self.fc2(spikes), mem2)
            outputs.append(mem2)
        return torch.stack(outputs).mean(0)


class SpikingJellyOverheadNet(nn.Module):
    """SpikingJelly LIF network 784-256-10, multi-step on the input repeated ``steps`` times;
    returns the time-mean readout and resets the neurons after every call."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        from spikingjelly.activation_based import functional, layer, neuron

        self.steps = steps
        self.net = nn.Sequential(layer.Linear(784, 256), neuron.LIFNode(), layer.Linear(256, 10))
        functional.set_step_mode(self.net, "m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        out = self.net(x.unsqueeze(0).repeat(self.steps, 1, 1)).mean(0)
        functional.reset_net(self.net)
        return out
