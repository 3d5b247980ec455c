"""The benchmark's networks, one definition each: torch ones in :mod:`.torch`, JAX ones in :mod:`.jax`.

This module itself imports neither framework: it only names what exists, for the command
line and the method registry.
"""

from __future__ import annotations

FRAMEWORKS = ("snntorch", "spikingjelly", "jax")
"""Frameworks the benchmark trains. ``jax`` (spyx, MLP and conv): its models in :mod:`.jax`, its
training step on ``sadp_core.adapters.jax`` (``h.value_and_grad``, ``h.batches``) in
:mod:`sadp_bench.train.jax`."""
TORCH_FRAMEWORKS = ("snntorch", "spikingjelly")
"""The frameworks of :func:`sadp_bench.models.torch.build_model` and of the gradient probes."""
MODELS = ("mlp", "conv")
"""Model names of the torch frameworks."""
JAX_MODELS = ("mlp", "conv")
"""Model names of the JAX framework: the snnTorch MLP and conv net in spyx."""
CLASSES = 10
