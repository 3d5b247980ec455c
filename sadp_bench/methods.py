"""The benchmark's methods, in one registry: what each name means for ``sadp_core.attach``.

A method is a name on the command line (``--methods``), a row in the report and a set of
``sadp_core.attach`` options. To add one, add a :class:`BenchMethod` to :data:`REGISTRY`:
the command line, the grid (``run``), the report's order and colours follow from it.
This module imports neither torch nor JAX.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .models import JAX_MODELS, MODELS


@dataclass(frozen=True)
class BenchMethod:
    """One benchmark method.

    Attributes:
        name: its name on the command line and in the records.
        attach: the ``sadp_core.attach`` options it runs with.
        models: the torch models it runs on (the oracle's exact score covers Linear layers only).
        jax: whether the JAX runs include it (every method does since the JAX adapter has
            ``scope="all"``; the oracle is exact there too: the spyx MLP's only parameters
            are its two Linear layers).
    """

    name: str
    attach: Mapping[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = MODELS
    jax: bool = True


REGISTRY: Mapping[str, BenchMethod] = MappingProxyType(
    {
        method.name: method
        for method in (
            BenchMethod("full", {"method": "full"}),
            # all data for round((1 - r) E) epochs, with its own cosine schedule (run_epochs)
            BenchMethod("fewer_epochs", {"method": "full"}),
            BenchMethod("random", {"method": "random"}),
            BenchMethod("infobatch", {"method": "infobatch"}),
            BenchMethod("seta", {"method": "seta"}),
            BenchMethod("ucb", {"method": "ucb"}),
            BenchMethod("eps_greedy", {"method": "eps_greedy"}),
            # the loss as score with SADP's sampler, at the smoothing of the recorded grid (0.5)
            BenchMethod("loss", {"method": "loss", "smoothing": 0.5}),
            BenchMethod("sadp", {"method": "sadp"}),
            # the ablations of SADP's default (smoothing 0.1, annealed correction): smoothing
            # 0.5 (the default before the smoothing sweep), and, at smoothing 0.5 as recorded,
            # Horvitz-Thompson weights throughout and weight 1 throughout
            BenchMethod("sadp_smooth05", {"method": "sadp", "smoothing": 0.5}),
            BenchMethod("sadp_unbiased", {"method": "sadp", "smoothing": 0.5, "correction": "unbiased"}),
            BenchMethod("sadp_uncorrected", {"method": "sadp", "smoothing": 0.5, "correction": "none"}),
            # SADP with scope="all"
            BenchMethod("sadp_all", {"method": "sadp", "scope": "all"}),
            # SADP with the exact per-example whole-model gradient norm as score: the
            # ghost-norm identity on every Linear layer, exact for the MLP, whose parameters
            # are all in Linear layers; not available for the conv model
            BenchMethod("oracle", {"method": "sadp", "scope": "all", "score": "exact"}, models=("mlp",)),
        )
    }
)
"""Every benchmark method, in the report's order (``full`` first)."""

METHODS = tuple(REGISTRY)
"""Benchmark method names. ``fewer_epochs`` is all data for ``round((1 - r) E)`` epochs
(:func:`run_epochs`), what a user would do instead of pruning; ``sadp`` is the library's
default; ``sadp_smooth05`` (``smoothing=0.5``), ``sadp_unbiased`` and ``sadp_uncorrected``
its ablations (the last two at ``smoothing=0.5``, with ``correction="unbiased"``,
``"none"``); ``sadp_all`` is SADP with ``scope="all"``; ``oracle`` is SADP with the exact
per-example whole-model gradient norm as score (``scope="all", score="exact"``)."""

JAX_METHODS = tuple(name for name, method in REGISTRY.items() if method.jax)
"""Methods of the JAX runs: all of them, ``sadp_all`` and the oracle included (JAX ``scope="all"``)."""


def run_epochs(method: str, prune_ratio: float, epochs: int) -> int:
    """Epochs a run trains for: ``round((1 - r) E)`` (at least 1) for ``fewer_epochs``, else ``E``.

    >>> run_epochs("fewer_epochs", 0.3, 8), run_epochs("sadp", 0.3, 8)
    (6, 8)
    """
    if method == "fewer_epochs":
        return max(1, round((1 - prune_ratio) * epochs))
    return epochs


def attach_options(method: str) -> dict[str, Any]:
    """``sadp_core.attach`` options of a benchmark method."""
    return dict(REGISTRY[method].attach)


def supported(model: str, method: str, framework: str = "snntorch") -> bool:
    """The oracle needs Linear-only networks (the exact score covers Linear layers); the JAX
    runs cover the MLP and :data:`JAX_METHODS`."""
    if framework == "jax":
        return model in JAX_MODELS and method in JAX_METHODS
    return model in REGISTRY[method].models
