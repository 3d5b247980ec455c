r"""Per-example scores from a readout trace (DESIGN.md section 2).

For the readout ``o_t = W s_t + b`` of a spiking network, an example's gradient on
``[W, b]`` is ``sum_t delta_t [s_t^T, 1]`` where ``delta_t = dL/do_t``. Its norm is bounded by

.. math::

    \|G\|_F \le S = \sum_t \|\delta_t\|_2 \sqrt{\|s_t\|_2^2 + 1},

which needs only two numbers per example and time step. The exact norm (the "ghost
norm") needs the time-by-time Gram matrices of spikes and errors.

All functions are written once against the Array API: they take and return arrays of the
caller's library (numpy, torch, jax, ...), keep its device, and work inside ``jax.jit``.
"""

from __future__ import annotations

from typing import Any

from ._array import Array, as_floating, concrete_any, namespace
from .errors import SADPError

__all__ = ["exact_readout_score", "spike_aware_score", "trace_norms"]


def spike_aware_score(spike_norms: Array, error_norms: Array, bias: bool = True, *, xp: Any = None) -> Array:
    """Spike-aware upper bound on each example's readout gradient norm.

    Args:
        spike_norms: ``[T, B]`` Euclidean norms ``||s_t||_2`` of the readout's input per
            time step and example (not squared, not a spike count).
        error_norms: ``[T, B]`` norms ``||dL/do_t||_2`` of the error reaching the readout.
        bias: whether the readout has a bias (adds the ``+ 1`` under the square root).
        xp: Array API namespace; inferred from the arrays when omitted.

    Returns:
        ``[B]`` scores ``S = sum_t e_t * sqrt(s_t^2 + 1)`` (``sum_t e_t * s_t`` without bias),
        each at least the example's true readout gradient norm.

    Example:
        >>> import numpy as np
        >>> spikes = np.array([[0.0, 2.0], [3.0, 0.0]])   # T=2 steps, B=2 examples
        >>> errors = np.array([[1.0, 1.0], [1.0, 0.5]])
        >>> spike_aware_score(spikes, errors).round(4).tolist()
        [4.1623, 2.7361]
    """
    xp = namespace(spike_norms, error_norms, xp=xp)
    spike_norms = as_floating(spike_norms, xp, "spike_norms")
    error_norms = as_floating(error_norms, xp, "error_norms")
    _check_time_major(spike_norms, "spike_norms", ndim=2)
    if tuple(error_norms.shape) != tuple(spike_norms.shape):
        raise SADPError(
            f"spike_norms has shape {tuple(spike_norms.shape)} but error_norms has shape "
            f"{tuple(error_norms.shape)}; both must be [T, B] (time-major)"
        )
    for name, norms in (("spike_norms", spike_norms), ("error_norms", error_norms)):
        if concrete_any(norms < 0):
            raise SADPError(f"{name} must hold norms (>= 0); found negative values")
    return bound_from_norms(spike_norms, error_norms, bias, xp)


def bound_from_norms(spike_norms: Array, error_norms: Array, bias: bool, xp: Any) -> Array:
    """The formula of :func:`spike_aware_score` without its checks (for the adapters' hot path)."""
    factor = xp.hypot(spike_norms, xp.ones_like(spike_norms)) if bias else spike_norms
    return xp.sum(error_norms * factor, axis=0)


def trace_norms(spikes: Array, errors: Array, *, xp: Any = None) -> tuple[Array, Array]:
    """Per-step, per-example norms of a raw readout trace.

    Args:
        spikes: ``[T, B, ...]`` input of the readout at every time step (any trailing shape,
            for instance ``[T, B, C, H, W]`` feature maps).
        errors: ``[T, B, ...]`` error ``dL/do_t`` at the readout output.
        xp: Array API namespace; inferred from the arrays when omitted.

    Returns:
        ``(spike_norms, error_norms)``, both ``[T, B]``, ready for :func:`spike_aware_score`.

    Example:
        >>> import numpy as np
        >>> spikes = np.ones((4, 3, 9))            # T=4, B=3, 9 features, all spiking
        >>> errors = np.full((4, 3, 2), 0.5)
        >>> s, e = trace_norms(spikes, errors)
        >>> s[0].tolist(), e[0].round(4).tolist()
        ([3.0, 3.0, 3.0], [0.7071, 0.7071, 0.7071])
    """
    xp = namespace(spikes, errors, xp=xp)
    spikes = _flatten_features(as_floating(spikes, xp, "spikes"), xp, "spikes")
    errors = _flatten_features(as_floating(errors, xp, "errors"), xp, "errors")
    _check_same_steps(spikes, errors)
    return xp.linalg.vector_norm(spikes, axis=-1), xp.linalg.vector_norm(errors, axis=-1)


def exact_readout_score(spikes: Array, errors: Array, bias: bool = True, *, xp: Any = None) -> Array:
    r"""Exact norm of each example's readout gradient, by the ghost-norm identity.

    .. math::

        \|G\|_F^2 = \sum_{t,t'} (\delta_t \cdot \delta_{t'})(s_t \cdot s_{t'} + 1)

    costs ``O(T^2 (F + C))`` per example and never forms the ``C x F`` gradient.

    Args:
        spikes: ``[T, B, ...]`` readout input per step (trailing axes are flattened).
        errors: ``[T, B, ...]`` error at the readout output per step.
        bias: whether the readout has a bias (the ``+ 1`` term).
        xp: Array API namespace; inferred from the arrays when omitted.

    Returns:
        ``[B]`` exact Frobenius norms of ``[sum_t delta_t s_t^T, sum_t delta_t]``.

    Example:
        >>> import numpy as np
        >>> spikes = np.array([[[1.0, 0.0]], [[1.0, 1.0]]])   # T=2, B=1, F=2
        >>> errors = np.array([[[1.0]], [[-1.0]]])             # C=1
        >>> float(exact_readout_score(spikes, errors)[0])     # gradient [0, -1 | 0]
        1.0
    """
    xp = namespace(spikes, errors, xp=xp)
    spikes = _flatten_features(as_floating(spikes, xp, "spikes"), xp, "spikes")
    errors = _flatten_features(as_floating(errors, xp, "errors"), xp, "errors")
    _check_same_steps(spikes, errors)
    spikes = xp.permute_dims(spikes, (1, 0, 2))  # [B, T, F]
    errors = xp.permute_dims(errors, (1, 0, 2))  # [B, T, C]
    spike_gram = spikes @ xp.matrix_transpose(spikes)  # [B, T, T]
    if bias:
        spike_gram = spike_gram + 1
    error_gram = errors @ xp.matrix_transpose(errors)
    batch = spike_gram.shape[0]
    squared = xp.sum(xp.reshape(spike_gram * error_gram, (batch, -1)), axis=1)
    return xp.sqrt(xp.maximum(squared, xp.zeros_like(squared)))


def _check_time_major(x: Array, name: str, ndim: int | None = None) -> None:
    if (ndim is not None and x.ndim != ndim) or x.ndim < 2:
        expected = "[T, B]" if ndim == 2 else "[T, B, ...]"
        raise SADPError(
            f"{name} must be time-major {expected}, got shape {tuple(x.shape)}; "
            "for [B, T] data, swap the first two axes"
        )


def _flatten_features(x: Array, xp: Any, name: str) -> Array:
    """``[T, B, ...]`` -> ``[T, B, F]``."""
    _check_time_major(x, name)
    steps, batch = x.shape[0], x.shape[1]
    return xp.reshape(x, (steps, batch, -1))


def _check_same_steps(spikes: Array, errors: Array) -> None:
    if tuple(spikes.shape[:2]) != tuple(errors.shape[:2]):
        raise SADPError(
            f"spikes are [T, B] = {tuple(spikes.shape[:2])} but errors are "
            f"{tuple(errors.shape[:2])}; both traces need the same steps and examples"
        )
