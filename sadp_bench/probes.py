"""Gradient-variance probe and bound quality of the torch networks (``sadp-bench probe``).

On a full-data checkpoint (``--epochs`` epochs on the training set) and a fixed subset of
``n`` training examples:

- **ground truth**: every example's gradient of the whole model (all parameters), one
  example at a time (forward, unweighted loss, backward): ``g_i``, and ``G = mean_i g_i``;
- **scores** as the handle computes them: the SADP bound with ``scope="readout"`` and
  ``scope="all"``, the exact readout norm (``score="exact"``), the exact norm of every
  Linear layer (the MLP's oracle), and the loss. *Fresh*: at the checkpoint; *stale*: one
  epoch earlier (what a pruned epoch sees for examples trained in the previous epoch);
- **variance**: for each method, ``draws`` plans of a pruning epoch at ratio ``r`` from the
  same scores (different seeds); the epoch estimate is what training follows, the mean of
  ``w_i g_i`` over the kept examples; reported: ``E ||est - G||^2 / ||G||^2`` (relative MSE)
  and its bias part ``||E est - G||^2 / ||G||^2``;
- **bound quality**: Spearman correlation of each score with ``||g_i||``, and the smallest
  ratio ``score / ||g_i||`` (at least 1 for an upper bound on the whole model).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

import sadp_core

from .data import Data
from .models.torch import per_example_loss, reset
from .train.common import RunSpec, Settings
from .train.torch import TorchRun

PROBE_METHODS = ("random", "infobatch", "ucb", "eps_greedy", "loss", "sadp", "sadp_all", "oracle")
SCORE_OF = {
    "random": "loss", "infobatch": "loss", "ucb": "loss", "eps_greedy": "loss", "loss": "loss",
    "sadp": "bound_readout", "sadp_all": "bound_all", "oracle": "exact_all",
}  # fmt: skip
SCORE_LABELS = {
    "loss": "loss (InfoBatch, UCB, eps-greedy, loss sampler)",
    "bound_readout": "SADP bound, readout scope",
    "bound_all": "SADP bound, all layers",
    "exact_readout": "exact readout gradient norm",
    "exact_all": "exact norm of every Linear layer (the oracle; MLP only)",
}


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((2 * ends - counts - 1) / 2)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation."""
    return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1])


def handle_scores(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings, model_name: str
) -> dict[str, np.ndarray]:
    """Each score kind of every example, from one pass through a fresh handle on a copy."""
    kinds = {
        "bound_readout": ("readout", "bound"),
        "bound_all": ("all", "bound"),
        "exact_readout": ("readout", "exact"),
    }
    if model_name == "mlp":
        kinds["exact_all"] = ("all", "exact")
    scores: dict[str, np.ndarray] = {}
    for kind, (scope, score) in kinds.items():
        clone = copy.deepcopy(model)
        clone.train()
        handle = sadp_core.attach(
            clone, num_examples=len(y), epochs=1, method="sadp", scope=scope, score=score
        )
        for batch in handle.batch_sampler(settings.batch_size):  # the warm-up epoch: all, weight 1
            index = torch.as_tensor(batch)
            losses = per_example_loss(clone(x[index]), y[index], settings.loss)
            handle.weighted_loss(losses, index).backward()
            clone.zero_grad(set_to_none=True)
            reset(clone)
        scores[kind] = np.array(handle.scores)
        handle.detach()
    with torch.no_grad():
        losses = [
            per_example_loss(model(x[s : s + 500]), y[s : s + 500], settings.loss)
            for s in range(0, len(y), 500)
        ]
        reset(model)
    scores["loss"] = torch.cat(losses).double().numpy()
    return scores


def per_example_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """``[n, P]`` float32: each example's gradient of all trainable parameters, one at a time."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    gradients = torch.empty(len(y), sum(p.numel() for p in parameters))
    model.train()
    for i in range(len(y)):
        model.zero_grad(set_to_none=True)
        per_example_loss(model(x[i : i + 1]), y[i : i + 1], loss).sum().backward()
        reset(model)
        gradients[i] = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in parameters]
        )
    model.zero_grad(set_to_none=True)
    return gradients


def variance_of(
    method: str, scores: np.ndarray, gram: np.ndarray, ratio: float, draws: int
) -> dict[str, Any]:
    """Relative MSE and squared bias of the epoch-gradient estimate of ``method`` over ``draws`` plans.

    ``gram[i, j] = g_i . g_j``: an estimate ``sum_i a_i g_i`` misses ``G = mean_i g_i`` by
    ``(a - 1/n)^T gram (a - 1/n)`` in squared norm, so no gradient vector is formed per draw.
    """
    n = len(scores)
    core = "sadp" if method in ("sadp_all", "oracle") else method
    deviations, kept = [], []
    for draw in range(draws):
        pruner = sadp_core.Pruner(
            num_examples=n, prune_ratio=ratio, epochs=2, seed=1000 + draw, method=core, anneal_fraction=0.0
        )
        pruner.plan(0)
        pruner.update(np.arange(n), scores)
        plan = pruner.plan(1)
        coefficients = np.zeros(n)
        np.add.at(coefficients, plan.indices, plan.weights / len(plan.indices))
        deviations.append(coefficients - 1.0 / n)
        kept.append(len(plan.indices) / n)
    stacked = np.array(deviations)
    scale = float(np.full(n, 1.0 / n) @ gram @ np.full(n, 1.0 / n))
    errors = np.einsum("di,ij,dj->d", stacked, gram, stacked) / scale
    bias = stacked.mean(0)
    return {
        "relative_mse": float(errors.mean()),
        "relative_mse_std": float(errors.std(ddof=1)),
        "relative_bias2": float(bias @ gram @ bias / scale),
        "processed_fraction": float(np.mean(kept)),
    }


def probe(
    framework: str, model_name: str, data: Data, settings: Settings, *, subset: int, draws: int,
    ratio: float, seed: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Both probes for one (framework, model); returns (variance records, bound records)."""
    run = TorchRun(RunSpec(framework, model_name, "full", 0.0, seed), data, settings)
    run.handle.detach()  # full data: the checkpoint's training needs no trace
    chosen = np.sort(np.random.default_rng(seed + 99).permutation(len(data.train_y))[:subset])
    x, y = data.train_x[torch.from_numpy(chosen)], data.train_y[torch.from_numpy(chosen)]
    for _ in range(settings.epochs - 1):
        run.train_epoch()
    stale = handle_scores(run.model, x, y, settings, model_name)
    run.train_epoch()
    fresh = handle_scores(run.model, x, y, settings, model_name)
    gradients = per_example_gradients(run.model, x, y, settings.loss)
    gram = (gradients @ gradients.T).double().numpy()  # float32 products, summed per pair
    true_norms = np.sqrt(np.diag(gram))
    common = {
        "framework": framework,
        "model": model_name,
        "seed": seed,
        "subset": len(y),
        "checkpoint_epochs": settings.epochs,
        "checkpoint_test_accuracy": run.curve[-1]["test_accuracy"],
    }
    variance = []
    for variant, scores in (("fresh", fresh), ("stale", stale)):
        for method in PROBE_METHODS:
            kind = SCORE_OF[method]
            if kind not in scores:
                continue
            result = variance_of(method, scores[kind], gram, ratio, draws)
            variance.append({**common, "method": method, "scores": variant, "score_kind": kind,
                             "prune_ratio": ratio, "draws": draws, **result})  # fmt: skip
            print(
                f"variance {framework}/{model_name} {method:<10} {variant}: "
                f"rel MSE {result['relative_mse']:.4g}"
            )
    bound = []
    for kind, values in fresh.items():
        ratios = values / true_norms
        bound.append(
            {
                **common,
                "score_kind": kind,
                "label": SCORE_LABELS[kind],
                "spearman": spearman(values, true_norms),
                "spearman_stale": spearman(stale[kind], true_norms) if kind in stale else None,
                "min_ratio": float(ratios.min()),
                "median_ratio": float(np.median(ratios)),
            }
        )
        print(f"bound {framework}/{model_name} {kind:<14} Spearman {bound[-1]['spearman']:.3f}")
    return variance, bound
