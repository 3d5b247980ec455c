"""The spike-aware bound, the exact ghost norm, and the trace helper (DESIGN.md section 2)."""

from __future__ import annotations

import numpy as np
import pytest

from sadp_core import SADPError, exact_readout_score, spike_aware_score, trace_norms


def direct_readout_norm(spikes: np.ndarray, errors: np.ndarray, bias: bool) -> np.ndarray:
    """||[sum_t delta_t s_t^T, sum_t delta_t]||_F by forming the gradient of each example."""
    norms = []
    for b in range(spikes.shape[1]):
        weight_grad = sum(np.outer(errors[t, b], spikes[t, b]) for t in range(spikes.shape[0]))
        squared = np.sum(weight_grad**2)
        if bias:
            squared += np.sum(errors[:, b].sum(axis=0) ** 2)
        norms.append(np.sqrt(squared))
    return np.array(norms)


def random_trace(seed: int, kind: str, steps: int = 6, batch: int = 16, features: int = 20, classes: int = 5):
    rng = np.random.default_rng(seed)
    if kind == "binary":
        spikes = (rng.random((steps, batch, features)) < rng.uniform(0.0, 0.6)).astype(np.float64)
    elif kind == "graded":
        spikes = rng.random((steps, batch, features)) * rng.uniform(0.1, 3.0)
    else:  # silent steps and silent examples mixed in
        spikes = (rng.random((steps, batch, features)) < 0.3).astype(np.float64)
        spikes[rng.random(steps) < 0.4] = 0.0
        spikes[:, : batch // 4] = 0.0
    errors = rng.normal(size=(steps, batch, classes)) * rng.uniform(0.01, 2.0)
    return spikes, errors


@pytest.mark.parametrize("kind", ["binary", "graded", "sparse"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_bound_dominates_exact_norm_which_matches_direct_gradient(xp, to_np, kind, bias, seed):
    spikes, errors = random_trace(seed, kind)
    truth = direct_readout_norm(spikes, errors, bias)

    exact = to_np(exact_readout_score(xp.asarray(spikes), xp.asarray(errors), bias=bias))
    spike_norms, error_norms = trace_norms(xp.asarray(spikes), xp.asarray(errors))
    bound = to_np(spike_aware_score(spike_norms, error_norms, bias=bias))

    np.testing.assert_allclose(exact, truth, rtol=1e-9, atol=1e-12)
    assert np.all(exact >= 0)
    assert np.all(bound >= truth * (1 - 1e-12)), (bound - truth).min()


def test_binary_spikes_give_the_spike_count_formula(xp, to_np):
    spikes, errors = random_trace(7, "binary")
    spike_norms, error_norms = (to_np(a) for a in trace_norms(xp.asarray(spikes), xp.asarray(errors)))
    counts = spikes.sum(axis=-1)
    np.testing.assert_allclose(spike_norms**2, counts, rtol=1e-12)
    expected = np.sum(np.linalg.norm(errors, axis=-1) * np.sqrt(counts + 1), axis=0)
    score = to_np(spike_aware_score(xp.asarray(spike_norms), xp.asarray(error_norms)))
    np.testing.assert_allclose(score, expected, rtol=1e-12)


def test_bound_is_tight_for_a_single_time_step(xp, to_np):
    """With T = 1 the gradient is rank one and the bound is exact."""
    spikes, errors = random_trace(3, "graded", steps=1)
    exact = to_np(exact_readout_score(xp.asarray(spikes), xp.asarray(errors)))
    bound = to_np(spike_aware_score(*trace_norms(xp.asarray(spikes), xp.asarray(errors))))
    np.testing.assert_allclose(bound, exact, rtol=1e-9)


def test_feature_maps_are_flattened(xp, to_np):
    rng = np.random.default_rng(0)
    spikes = (rng.random((3, 4, 2, 5, 5)) < 0.2).astype(np.float64)
    errors = rng.normal(size=(3, 4, 7))
    flat = spikes.reshape(3, 4, -1)
    np.testing.assert_allclose(
        to_np(exact_readout_score(xp.asarray(spikes), xp.asarray(errors))),
        direct_readout_norm(flat, errors, bias=True),
        rtol=1e-9,
    )


def test_no_spikes_and_no_bias_scores_zero(xp, to_np):
    spikes = np.zeros((4, 3, 6))
    errors = np.ones((4, 3, 2))
    assert np.all(
        to_np(spike_aware_score(*trace_norms(xp.asarray(spikes), xp.asarray(errors)), bias=False)) == 0
    )
    assert np.all(to_np(exact_readout_score(xp.asarray(spikes), xp.asarray(errors), bias=False)) == 0)


def test_integer_spike_counts_are_accepted(xp, to_np):
    counts = np.array([[0, 3], [8, 0]])
    score = spike_aware_score(xp.asarray(np.sqrt(counts)), xp.asarray(np.ones((2, 2))))
    np.testing.assert_allclose(to_np(score), [1 + 3.0, 2 + 1.0])
    score = spike_aware_score(xp.asarray(np.array([[0, 3]])), xp.asarray(np.array([[1, 1]])), bias=False)
    np.testing.assert_allclose(to_np(score), [0.0, 3.0])


@pytest.mark.parametrize(
    ("spikes_shape", "errors_shape", "message"),
    [
        ((4, 3), (4, 2), "same shape|has shape"),
        ((4,), (4,), "time-major"),
        ((2, 3, 4), (2, 3, 4), "time-major"),
    ],
)
def test_shape_errors_name_the_problem(xp, spikes_shape, errors_shape, message):
    with pytest.raises(SADPError, match=message):
        spike_aware_score(xp.ones(spikes_shape), xp.ones(errors_shape))


def test_trace_shapes_must_agree(xp):
    with pytest.raises(SADPError, match="same steps and examples"):
        trace_norms(xp.ones((4, 3, 5)), xp.ones((4, 2, 5)))
    with pytest.raises(SADPError, match="time-major"):
        exact_readout_score(xp.ones((4,)), xp.ones((4,)))


def test_negative_norms_are_rejected(xp):
    with pytest.raises(SADPError, match="negative"):
        spike_aware_score(xp.asarray(np.array([[1.0, -1.0]])), xp.ones((1, 2)))


@pytest.mark.backend("jax")
def test_scores_work_inside_jax_jit():
    import jax
    import jax.numpy as jnp

    spikes, errors = random_trace(11, "binary")
    expected = spike_aware_score(*trace_norms(spikes, errors))

    @jax.jit
    def scores(s, e):
        return spike_aware_score(*trace_norms(s, e)), exact_readout_score(s, e)

    bound, exact = scores(jnp.asarray(spikes), jnp.asarray(errors))
    np.testing.assert_allclose(np.asarray(bound), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(exact), direct_readout_norm(spikes, errors, True), rtol=1e-5)
