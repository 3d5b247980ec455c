r"""The taps of the JAX adapter: ``custom_vjp`` identities that score examples going backward.

A tap sits on the output of one Linear (:func:`tap`) or Conv (:func:`conv_tap`) layer.
Going forward it returns the output unchanged. Going backward it hands the error ``g_t``
on to the network unchanged and gives a zero array ``u`` (made by ``grad_fn``, one number
per example) the cotangent ``||g_t|| * factor_t``, where ``factor_t`` comes from the
layer's input ``s_t`` (DESIGN.md section 2):

- Linear: ``factor_t = sqrt(||s_t||^2 + 1)`` (``+ 1`` only with a bias);
- Conv with kernel area ``k`` and ``P`` output positions: every input element feeds at most
  ``k`` positions, so ``||[dW, db]|| <= ||g_t|| sqrt(k ||s_t||^2 + P)`` (``+ P`` only with
  a bias), whatever the strides, padding, dilation or feature groups.

The time loop (``lax.scan``) sums the cotangents over steps, so ``dloss/du_i`` is
``(w_i / B)`` times example ``i``'s bound for that layer. With ``score="exact"``
(Linear only), ``u`` is ``[B, C, F + 1]`` and receives ``g_t [s_t, 1]^T``: the example's
gradient itself, whose norm is exact.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from sadp_core.errors import SADPError

__all__ = ["TAP_CALLS", "conv_tap", "tap"]

TAP_CALLS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("sadp_tap_calls", default=None)
"""While ``grad_fn`` traces: the batch size of every tap applied (see ``JaxHandle._tracing``)."""


def _tap_with(contribution: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """A ``custom_vjp`` identity ``(output, saved, u) -> output`` whose backward passes the
    error ``g`` on unchanged and gives ``u`` the cotangent ``contribution(saved, g)``."""

    @jax.custom_vjp
    def tapped(output: jax.Array, saved: jax.Array, u: jax.Array) -> jax.Array:
        return output

    def forward(output: jax.Array, saved: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
        return output, saved

    def backward(saved: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        return g, jnp.zeros_like(saved), contribution(saved, g)

    tapped.defvjp(forward, backward)
    return tapped


def _bound_term(factor: jax.Array, g: jax.Array) -> jax.Array:
    """``sum_t ||g_t|| factor_t`` per example.

    ``factor`` has the leading (time and) batch axes of ``g``, ``[..., B]``; the error's
    norm is taken over all its other axes (features, or positions and channels)."""
    batch = factor.shape[-1]
    feature_axes = tuple(range(factor.ndim, g.ndim))
    error_norms = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)), axis=feature_axes))  # [..., B]
    return jnp.sum(jnp.reshape(error_norms * factor, (-1, batch)), axis=0)  # [B]


def _exact_term(augmented: jax.Array, g: jax.Array) -> jax.Array:
    """The example's readout gradient of this call: sum over leading (time) axes of g [s, 1]^T."""
    return jnp.einsum("...bc,...bf->bcf", g.astype(jnp.float32), augmented)


_bound_tap = _tap_with(_bound_term)
_exact_tap = _tap_with(_exact_term)


def _check_u(u: jax.Array, batch: int) -> None:
    if u.ndim in (1, 3) and u.shape[0] != batch:
        raise SADPError(
            f"the readout saw a batch of {batch} examples but u was made for {u.shape[0]}: pass one "
            "weight per example of the batch to grad_fn"
        )


def _note_call(batch: int) -> None:
    calls = TAP_CALLS.get()
    if calls is not None:
        calls.append(batch)


def tap(output: jax.Array, inputs: jax.Array, u: jax.Array, *, bias: bool = True) -> jax.Array:
    """Mark ``output = inputs @ W + b`` as the readout: returns ``output``, unchanged.

    Going backward, the gradient reaching ``output`` passes on unchanged, and ``u`` (the
    zero array that ``grad_fn`` hands to ``loss_fn``) receives the example's share of the
    spike-aware bound (``u`` of shape ``[B]``) or of the exact readout gradient (``u`` of
    shape ``[B, C, F + 1]``, ``score="exact"``). Apply it to the readout output at every
    time step, inside the scan, before anything else uses that output.

    Args:
        output: ``[B, C]`` readout output of one step, or ``[T, B, C]`` for all steps.
        inputs: ``[B, F]`` (or ``[T, B, F]``) input of the readout at the same steps (the
            spikes ``s_t``; any real values: the real norm is used).
        u: the ``u`` that ``grad_fn`` passed to ``loss_fn``.
        bias: whether the readout adds a bias (the ``+ 1`` of the bound).

    Raises:
        SADPError: if the shapes do not fit (checked while tracing, at no run-time cost).

    Example (an equinox readout inside a hand-written scan, see the docs for the loop):
        >>> import jax, jax.numpy as jnp, equinox as eqx
        >>> readout = eqx.nn.Linear(5, 2, key=jax.random.key(0))
        >>> spikes = jnp.ones((3, 5))                       # one step, B=3, F=5
        >>> def loss(u):
        ...     out = tap(jax.vmap(readout)(spikes), spikes, u)   # [B, C]
        ...     return jnp.sum(out**2)
        >>> jax.grad(loss)(jnp.zeros(3)).shape              # per-example bound shares
        (3,)
    """
    if not (hasattr(output, "shape") and hasattr(inputs, "shape") and hasattr(u, "shape")):
        raise SADPError("tap(output, inputs, u) needs arrays; pass the u that grad_fn gave loss_fn")
    if output.ndim not in (2, 3) or inputs.ndim != output.ndim or output.shape[:-1] != inputs.shape[:-1]:
        raise SADPError(
            f"tap() needs the readout output [B, C] (or [T, B, C], time-major) and its input [B, F] "
            f"(or [T, B, F]) with the same leading axes; got output {tuple(output.shape)} and inputs "
            f"{tuple(inputs.shape)}. Apply it to the batched output, outside any per-example jax.vmap"
        )
    batch = output.shape[-2]
    classes, features = output.shape[-1], inputs.shape[-1]
    _note_call(batch)
    spikes = jax.lax.stop_gradient(inputs).astype(jnp.float32)
    _check_u(u, batch)
    if u.ndim == 1:
        squared = jnp.sum(jnp.square(spikes), axis=-1)
        factor = jnp.sqrt(squared + 1.0) if bias else jnp.sqrt(squared)
        return _bound_tap(output, factor, u)
    if u.shape == (batch, classes, features + 1):
        # *_like keeps the spikes' sharding: under a mesh with explicit axes, concatenate needs it
        ones = jnp.ones_like(spikes[..., :1]) if bias else jnp.zeros_like(spikes[..., :1])
        return _exact_tap(output, jnp.concatenate([spikes, ones], axis=-1), u)
    raise SADPError(
        f"tap() got u of shape {tuple(u.shape)} for a batch of {batch} examples, {features} inputs and "
        f"{classes} outputs: expected ({batch},) (score='bound') or ({batch}, {classes}, {features + 1}) "
        "(score='exact'); pass the u that grad_fn gave loss_fn, and readout_shape=(C, F) to attach()"
    )


def conv_tap(
    output: jax.Array, inputs: jax.Array, u: jax.Array, *, kernel_size: tuple[int, ...], bias: bool = True
) -> jax.Array:
    """:func:`tap` for a convolution (``nnx.Conv``, channels last): returns ``output``, unchanged.

    Going backward, ``u`` (``[B]``) receives ``sum_t ||g_t|| sqrt(k ||s_t||^2 + P)``, the
    bound on the norm of the example's ``[dW, db]`` (``k = prod(kernel_size)``, ``P`` output
    positions; ``+ P`` only with a bias).

    Args:
        output: ``[B, *positions, C_out]``, or ``[T, B, *positions, C_out]`` for all steps.
        inputs: ``[B, *positions_in, C_in]`` (or with the same leading ``T``).
        u: the ``[B]`` zero array of this layer that ``grad_fn`` made.
        kernel_size: the convolution's kernel size, one entry per spatial axis.
        bias: whether the convolution adds a bias.

    Raises:
        SADPError: if the shapes do not fit (checked while tracing).

    Example (one step of a 1-D convolution, B=2):
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> conv = nnx.Conv(3, 4, kernel_size=(3,), rngs=nnx.Rngs(0))
        >>> x = jnp.ones((2, 8, 3))
        >>> loss = lambda u: jnp.sum(conv_tap(conv(x), x, u, kernel_size=(3,)) ** 2)
        >>> jax.grad(loss)(jnp.zeros(2)).shape
        (2,)
    """
    dims = len(kernel_size)
    lead = inputs.ndim - dims - 1  # 1: [B, ...]; 2: [T, B, ...]
    if lead not in (1, 2) or output.ndim != inputs.ndim or output.shape[:lead] != inputs.shape[:lead]:
        raise SADPError(
            f"a {dims}-d convolution's tap needs input [B, {dims} spatial axes, C] (or with a leading T, "
            f"time-major) and an output with the same leading axes; got output {tuple(output.shape)} and "
            f"inputs {tuple(inputs.shape)}. Apply the layer to the batch, outside any per-example jax.vmap"
        )
    if u.ndim != 1:
        raise SADPError(
            f"score='exact' supports Linear layers only; a convolution got u of shape {tuple(u.shape)}"
        )
    batch = inputs.shape[lead - 1]
    _note_call(batch)
    _check_u(u, batch)
    spikes = jax.lax.stop_gradient(inputs).astype(jnp.float32)
    squared = jnp.sum(jnp.square(spikes), axis=tuple(range(lead, inputs.ndim)))  # [(T,) B]
    area, positions = math.prod(kernel_size), math.prod(output.shape[lead:-1])
    factor = jnp.sqrt(area * squared + (positions if bias else 0.0))
    return _bound_tap(output, factor, u)
