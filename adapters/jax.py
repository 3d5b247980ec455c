r"""JAX adapter: ``sadp_core.attach(model)`` for flax NNX (spyx), equinox and plain-pytree SNNs.

The handle is a :class:`sadp_core.Pruner` that also builds the training step's gradient
function. ``h.value_and_grad(loss_fn)`` returns ``grad_fn(model, x, y, w)`` which, in one
forward and one backward pass, computes the weighted batch loss ``mean(w * losses)``, the
gradients, and every example's spike-aware score (DESIGN.md section 2):

- a ``jax.custom_vjp`` *tap* on the readout output is the identity going forward; going
  backward it hands the error ``g_t`` on to the network unchanged and returns, as the
  gradient of a zero array ``u[B]``, ``||g_t|| sqrt(||s_t||^2 + 1)`` per example. The
  time loop (``lax.scan``) sums it over steps, so ``dloss/du_i = (w_i / B) S_i``: the
  scores cost two norms per step and example, inside the backward pass that runs anyway;
- with ``score="exact"``, ``u`` is ``[B, C, F + 1]`` and receives ``g_t [s_t, 1]^T``, so
  ``dloss/du_i`` is the example's readout gradient itself and its norm is exact (more
  memory: ``B C (F + 1)`` numbers).

Two ways to put the tap on the readout:

- **flax NNX models** (``spyx.nn.Sequential`` run by ``spyx.nn.run``, or your own
  ``nnx.Module``): ``attach`` finds the readout, the last ``nnx.Linear`` outside the
  spiking neurons (or the one named by ``readout=``), and swaps its class for a subclass
  that taps its output while ``grad_fn`` traces. Parameter paths do not change, so an
  optimizer or checkpoint made before ``attach`` keeps working; ``detach()`` restores the
  class. ``loss_fn(model, x, y)`` returns the per-example losses ``[B]``.
- **equinox models and hand-written** ``lax.scan`` **loops** (and NNX models attached
  with ``functional=True``): apply :func:`tap` to the readout output yourself, inside the
  scan; ``loss_fn(model, x, y, u)`` receives ``u`` from ``grad_fn`` and passes it to the tap.

Example (spyx):
    >>> import jax, jax.numpy as jnp, numpy as np, optax, spyx, sadp_core
    >>> from flax import nnx
    >>> rngs = nnx.Rngs(0)
    >>> model = spyx.nn.Sequential(nnx.Linear(8, 16, rngs=rngs), spyx.nn.LIF((16,), rngs=rngs),
    ...                            nnx.Linear(16, 3, rngs=rngs), spyx.nn.LI((3,), rngs=rngs))
    >>> optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    >>> X = np.random.default_rng(0).random((4, 100, 8), dtype=np.float32) * 2  # [T, N, F]
    >>> Y = np.arange(100) % 3
    >>> h = sadp_core.attach(model, num_examples=100, prune_ratio=0.5, epochs=3)
    >>> h.readout_name
    'layers.2'
    >>> def loss_fn(model, x, y):                          # per-example losses [B]
    ...     out, _ = spyx.nn.run(model, x)                 # [T, B, 3]
    ...     return optax.softmax_cross_entropy_with_integer_labels(out.mean(0), y)
    >>> grad_fn = h.value_and_grad(loss_fn)
    >>> @nnx.jit
    ... def train_step(model, optimizer, x, y, w):
    ...     (loss, scores), grads = grad_fn(model, x, y, w)
    ...     optimizer.update(model, grads)
    ...     return loss, scores
    >>> sizes = []
    >>> for epoch in range(3):
    ...     batches = h.batches(batch_size=32)                # the next epoch's plan
    ...     sizes.append(len(batches.plan.indices))
    ...     for idx, w in batches:                             # numpy indices and weights
    ...         loss, scores = train_step(model, optimizer, X[:, idx], Y[idx], w)
    ...         h.update(idx, scores)                          # jax arrays, no host sync
    >>> sizes, h.stats.unscored_examples                   # warm-up, 2 pruned epochs
    ([100, 50, 50], 0)
    >>> h.detach()

Length: about 760 lines, nearly all of it :class:`JaxHandle` and its gradient function,
which share the traced step's private state; splitting the tap and the flax NNX glue into
their own modules is open work (the JAX parity part of the adapters issue).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sadp_core.errors import SADPError
from sadp_core.pruner import Plan, Pruner, PrunerStats

__all__ = ["EpochBatches", "JaxHandle", "accepts", "attach", "tap"]

_RECORD_EVERY = 64  # updates whose scores wait on the device for one host copy
_TAP_CALLS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("sadp_tap_calls", default=None)

LossFn = Callable[..., Any]
GradFn = Callable[[Any, Any, Any, Any], tuple[tuple[jax.Array, jax.Array], Any]]


# -- the tap ---------------------------------------------------------------------------------


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
    """``sum_t ||g_t|| factor_t`` per example, ``factor = sqrt(||s_t||^2 + 1)`` (``[..., B]``)."""
    batch = factor.shape[-1]
    error_norms = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)), axis=-1))  # [..., B]
    return jnp.sum(jnp.reshape(error_norms * factor, (-1, batch)), axis=0)  # [B]


def _exact_term(augmented: jax.Array, g: jax.Array) -> jax.Array:
    """The example's readout gradient of this call: sum over leading (time) axes of g [s, 1]^T."""
    return jnp.einsum("...bc,...bf->bcf", g.astype(jnp.float32), augmented)


_bound_tap = _tap_with(_bound_term)
_exact_tap = _tap_with(_exact_term)


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
    calls = _TAP_CALLS.get()
    if calls is not None:
        calls.append(batch)
    spikes = jax.lax.stop_gradient(inputs).astype(jnp.float32)
    if u.ndim in (1, 3) and u.shape[0] != batch:
        raise SADPError(
            f"the readout saw a batch of {batch} examples but u was made for {u.shape[0]}: pass one "
            "weight per example of the batch to grad_fn"
        )
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


# -- flax NNX: the readout's class is swapped for a tapping subclass ---------------------------


@dataclass
class _Slot:
    """What the tapping subclass reads: ``u`` while ``grad_fn`` traces, else None."""

    bias: bool
    u: jax.Array | None = None


def _tapping_class(original: type, slot: _Slot) -> type:
    call = original.__call__

    def __call__(self: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        output = call(self, inputs, *args, **kwargs)
        if slot.u is None:
            return output
        return tap(output, inputs, slot.u, bias=slot.bias)

    namespace = {"__call__": __call__, "__module__": original.__module__, "_sadp_original": original}
    return type(f"SADPTapped{original.__name__}", (original,), namespace)


def _nnx() -> Any:
    if "flax" not in sys.modules:
        return None
    from flax import nnx

    return nnx


def _equinox() -> Any:
    return sys.modules.get("equinox")


def _spyx_neurons() -> tuple[type, ...]:
    nn = sys.modules.get("spyx.nn")
    if nn is None:
        return ()
    names = ("LIF", "ALIF", "CuBaLIF", "IF", "RIF", "RLIF", "RCuBaLIF", "PSU_LIF")
    return tuple(getattr(nn, name) for name in names if isinstance(getattr(nn, name, None), type))


def _is_neuron(node: Any, neurons: tuple[type, ...]) -> bool:
    """A spyx neuron, a class listed in ``neurons=``, or a spyx-style one (initial_state + spike)."""
    if neurons and isinstance(node, neurons):
        return True
    return callable(getattr(node, "initial_state", None)) and callable(getattr(node, "spike", None))


def _children(node: Any, nnx: Any) -> list[Any]:
    if isinstance(node, nnx.Pytree):
        return [value for key, value in vars(node).items() if not str(key).startswith("_")]
    if isinstance(node, (list, tuple)):
        return list(node)
    if isinstance(node, dict):
        return list(node.values())
    return []


def _scan_model(model: Any, nnx: Any, neurons: tuple[type, ...]) -> tuple[list[tuple[str, Any]], bool]:
    """Linear layers outside neurons, in definition order, and whether any neuron exists."""
    names = {id(node): ".".join(str(p) for p in path) for path, node in nnx.iter_graph(model)}
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()
    any_neuron = False

    def walk(node: Any, inside_neuron: bool) -> None:
        nonlocal any_neuron
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, nnx.Linear) and not inside_neuron and id(node) in names:
            found.append((names[id(node)], node))
        neuron = isinstance(node, nnx.Module) and _is_neuron(node, neurons)
        any_neuron = any_neuron or neuron
        for child in _children(node, nnx):
            walk(child, inside_neuron or neuron)

    walk(model, False)
    return found, any_neuron


# -- the handle -------------------------------------------------------------------------------


class EpochBatches:
    """The batches of one epoch's plan: ``(indices, weights)`` numpy pairs.

    ``indices`` are int64 example indices, ``weights`` the float32 loss weights of the
    plan (train on ``mean(weights * per_example_loss)``). Iterating it again gives the same
    batches; the last batch may be short (``drop_last=False``).
    """

    def __init__(self, plan: Plan, batch_size: int, drop_last: bool) -> None:
        self.plan, self.batch_size = plan, batch_size
        self.epoch = plan.epoch
        self._weights = plan.weights.astype(np.float32)
        size = len(plan.indices)
        self._stop = size - size % batch_size if drop_last else size

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        indices, weights = self.plan.indices, self._weights
        for start in range(0, self._stop, self.batch_size):
            yield indices[start : start + self.batch_size], weights[start : start + self.batch_size]

    def __len__(self) -> int:
        return -(-self._stop // self.batch_size)


class JaxHandle(Pruner):
    """A :class:`~sadp_core.Pruner` attached to a JAX SNN (see :func:`sadp_core.attach`).

    Args:
        model: a flax NNX module (spyx or your own), an equinox module, or a pytree of
            parameters (for a hand-written model).
        readout: flax NNX only: the readout ``nnx.Linear``, by dotted path (``"layers.2"``)
            or as the module; found automatically if None.
        score: ``"bound"`` (the spike-aware bound, default) or ``"exact"`` (the exact norm
            of each example's readout gradient; ``B C (F + 1)`` more numbers in memory).
        functional: flax NNX only: do not swap the readout's class; ``loss_fn`` takes ``u``
            and applies :func:`tap` itself (always so for equinox and pytrees).
        neurons: classes of your own spiking layers (flax NNX), for the check that the model
            spikes and to skip Linear layers inside them. spyx neurons, and any module with
            ``initial_state`` and ``spike`` methods, are known already.
        readout_shape: ``(C, F)``, the readout's outputs and inputs: needed by
            ``score="exact"`` when the tap is applied by hand.
        **options: the :class:`~sadp_core.Pruner` options (``num_examples``, ``epochs``, ...).
    """

    def __init__(
        self,
        model: Any,
        *,
        readout: Any = None,
        score: str = "bound",
        functional: bool = False,
        neurons: tuple[type, ...] | type | None = None,
        readout_shape: tuple[int, int] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if score not in ("bound", "exact"):
            raise SADPError(f"score must be 'bound' or 'exact', got {score!r}")
        nnx, eqx = _nnx(), _equinox()
        if nnx is not None and isinstance(model, nnx.Module):
            self.framework = "nnx"
        elif eqx is not None and isinstance(model, eqx.Module):
            self.framework = "equinox"
        elif _is_array_pytree(model):
            self.framework = "pytree"
        else:
            raise SADPError(
                f"the JAX adapter takes a flax NNX module, an equinox module or a pytree of jax arrays, "
                f"got {type(model).__name__}"
            )
        self.model, self.score_kind = model, score
        self.functional = bool(functional) or self.framework != "nnx"
        self.readout_name: str | None = None
        self._readout: Any = None
        self._slot: _Slot | None = None
        self._shape: tuple[int, int] | None = None  # (C, F) of the readout
        if self.framework != "nnx" and readout is not None:
            raise SADPError(
                f"readout= selects a layer of a flax NNX model; for a {self.framework} model apply "
                "sadp_core.adapters.jax.tap(output, inputs, u) to the readout output in your loss"
            )
        if not self.functional:
            self._attach_readout(model, nnx, readout, _as_types(neurons))
        elif readout_shape is not None:
            if (
                not isinstance(readout_shape, tuple)
                or len(readout_shape) != 2
                or not all(isinstance(n, int) and n > 0 for n in readout_shape)
            ):
                raise SADPError(f"readout_shape must be (C, F), two positive ints, got {readout_shape!r}")
            self._shape = readout_shape
        if score == "exact" and self._shape is None:
            raise SADPError(
                "score='exact' with a tap applied by hand needs readout_shape=(C, F): the readout's "
                "number of outputs C and inputs F"
            )
        if self.framework == "nnx":
            _strengthen_weak_types(model, nnx)
        self._next_epoch = 0
        self._pending: list[tuple[np.ndarray, jax.Array]] = []
        self._detached = False

    def _attach_readout(self, model: Any, nnx: Any, readout: Any, neurons: tuple[type, ...]) -> None:
        known = (*_spyx_neurons(), *neurons)
        candidates, spiking = _scan_model(model, nnx, known)
        if not spiking:
            raise SADPError(
                f"no spiking layer found in {type(model).__name__}: expected spyx neurons (LIF, ALIF, "
                "CuBaLIF, ...) or modules with initial_state() and spike(); pass neurons=(YourNeuron,) "
                "for your own neuron class, or use sadp_core.Pruner directly"
            )
        names = [name for name, _ in candidates]
        if readout is None:
            if not candidates:
                raise SADPError(
                    f"no nnx.Linear outside the spiking neurons of {type(model).__name__}: nothing to use "
                    "as the readout; pass readout='path.to.layer', or attach(..., functional=True) and "
                    "apply sadp_core.adapters.jax.tap() to the readout output in your model"
                )
            name, module = candidates[-1]
        else:
            by_name = dict(candidates)
            if isinstance(readout, str):
                module = by_name.get(readout)
                name = readout
            else:
                found = [(n, m) for n, m in candidates if m is readout]
                name, module = found[0] if found else (repr(type(readout).__name__), None)
            if module is None:
                raise SADPError(
                    f"readout={name!r} is not an nnx.Linear of the model outside its neurons; "
                    f"choose one of {names}"
                )
        if hasattr(type(module), "_sadp_original"):
            raise SADPError(
                f"the readout {name!r} is already tapped by another handle; detach that handle first"
            )
        self._slot = _Slot(bias=getattr(module, "bias", None) is not None)
        self._shape = (int(module.out_features), int(module.in_features))
        module.__class__ = _tapping_class(type(module), self._slot)
        self.readout_name, self._readout = name, module

    # -- data --------------------------------------------------------------------------------

    def batches(self, batch_size: int, *, drop_last: bool = False) -> EpochBatches:
        """The batches of the next epoch's plan (each call is the next epoch).

        Args:
            batch_size: examples per batch; the last batch may be short (one more
                compilation of a jitted step, the first time its size occurs).
            drop_last: leave out a short last batch.

        Returns:
            an iterable of ``(indices, weights)``: numpy int64 indices into the training set
            and float32 loss weights, for ``grad_fn(model, X[idx], Y[idx], w)``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SADPError(f"batch_size must be a positive integer, got {batch_size!r}")
        if self._next_epoch >= self.epochs:
            raise SADPError(
                f"all {self.epochs} epochs of the schedule have been handed out; make the handle with "
                "a larger epochs="
            )
        plan = self.plan(self._next_epoch)
        self._next_epoch += 1
        return EpochBatches(plan, batch_size, drop_last)

    @property
    def next_epoch(self) -> int:
        """The epoch that the next :meth:`batches` call hands out."""
        return self._next_epoch

    # -- the gradient function ---------------------------------------------------------------

    def value_and_grad(self, loss_fn: LossFn, *, jit: bool = True, wrt: Any = None) -> GradFn:
        """``grad_fn(model, x, y, w) -> ((loss, scores), grads)`` for a training step.

        Args:
            loss_fn: ``loss_fn(model, x, y) -> [B]`` per-example losses (unweighted, not
                reduced), or ``loss_fn(model, x, y, u)`` when the tap is applied by hand
                (equinox, pytrees, ``functional=True``).
            jit: compile ``grad_fn`` (``nnx.jit``, ``eqx.filter_jit`` or ``jax.jit``); it is
                also fine inside your own jitted step.
            wrt: flax NNX only: the filter of the variables to differentiate (default
                ``nnx.Param``), as for ``nnx.value_and_grad``.

        Returns:
            ``grad_fn``: ``loss = mean(w * losses)``; ``scores`` are ``[B]`` per-example
            scores for :meth:`update` (the spike-aware bound, or the exact readout gradient
            norm; the unweighted losses for the loss-based methods), NaN where ``w == 0``;
            ``grads`` as ``nnx.value_and_grad`` (an ``nnx.State``), ``eqx.filter_value_and_grad``
            or ``jax.grad`` would give them for the model.
        """
        if not callable(loss_fn):
            raise SADPError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        step: Callable[..., Any]
        if self.framework == "nnx":
            nnx = _nnx()
            step = self._nnx_step(loss_fn, nnx, nnx.Param if wrt is None else wrt)
            return nnx.jit(step) if jit else step
        if wrt is not None:
            raise SADPError("wrt= applies to flax NNX models only")
        if self.framework == "equinox":
            step = self._equinox_step(loss_fn)
            return _equinox().filter_jit(step) if jit else step
        step = self._pytree_step(loss_fn)
        return jax.jit(step) if jit else step

    def _zero_u(self, w: jax.Array) -> jax.Array:
        """The zero ``u`` for a batch of weights ``w``, sharded as ``w`` along its batch axis.

        Made from ``w`` rather than from its shape: under a mesh with explicit axes
        (``jax.make_mesh``'s default) a new ``jnp.zeros((B,))`` would be replicated while
        the tap's backward returns ``grad_u`` sharded as the batch, a type mismatch that
        ``custom_vjp`` refuses. Under automatic axes or on one device it changes nothing.
        """
        zeros = jnp.zeros_like(w, dtype=jnp.float32)
        if self.score_kind == "exact" and self._shape is not None:
            classes, features = self._shape
            return jnp.broadcast_to(zeros[:, None, None], (w.shape[0], classes, features + 1))
        return zeros

    @contextlib.contextmanager
    def _tracing(self, u: jax.Array | None) -> Iterator[list[int]]:
        """While ``loss_fn`` traces: hand ``u`` to the tapped readout, count the taps applied."""
        if self._detached:
            raise SADPError("this handle is detached; attach the model again to train with pruning")
        calls: list[int] = []
        token = _TAP_CALLS.set(calls)
        slot = self._slot
        if slot is not None:
            slot.u = u
        try:
            yield calls
        finally:
            _TAP_CALLS.reset(token)
            if slot is not None:
                slot.u = None

    def _check_tapped(self, calls: list[int], batch: int) -> None:
        if not calls:
            where = (
                f"the readout {self.readout_name!r} never ran in loss_fn (is it the readout? pass readout=)"
                if not self.functional
                else "loss_fn never applied sadp_core.adapters.jax.tap(output, inputs, u) to the readout"
            )
            raise SADPError(
                f"no scores: {where}; a forward jitted separately inside loss_fn also hides it (the tap must "
                "be traced with grad_fn)"
            )
        if any(size != batch for size in calls):
            raise SADPError(
                f"the readout saw batches of {sorted(set(calls))} examples but w has {batch} weights: "
                "pass one weight per example of the batch"
            )

    def _objective(self, loss_fn: LossFn, x: Any, y: Any, w: jax.Array, with_u: bool) -> Callable[..., Any]:
        batch = w.shape[0]
        wants_bound = self.expects == "bound"

        def objective(model: Any, u: jax.Array) -> tuple[jax.Array, jax.Array]:
            with self._tracing(u if wants_bound else None) as calls:
                losses = loss_fn(model, x, y, u) if with_u else loss_fn(model, x, y)
                if wants_bound:
                    self._check_tapped(calls, batch)
            losses = _check_losses(losses, batch)
            return jnp.mean(w.astype(losses.dtype) * losses), losses

        return objective

    def _scores(self, grad_u: jax.Array | None, w: jax.Array, losses: jax.Array) -> jax.Array:
        if grad_u is None or self.expects != "bound":
            return jax.lax.stop_gradient(losses).astype(jnp.float32)
        batch = w.shape[0]
        share = grad_u if grad_u.ndim == 1 else jnp.sqrt(jnp.sum(jnp.square(grad_u.reshape(batch, -1)), 1))
        w32 = w.astype(jnp.float32)
        safe = jnp.where(w32 > 0, w32, 1.0)
        return jnp.where(w32 > 0, share * (batch / safe), jnp.nan)

    def _nnx_step(self, loss_fn: LossFn, nnx: Any, wrt: Any) -> Callable[..., Any]:
        with_u = self.functional

        def grad_fn(model: Any, x: Any, y: Any, w: Any) -> tuple[tuple[jax.Array, jax.Array], Any]:
            w = _check_weights(w)
            objective = self._objective(loss_fn, x, y, w, with_u)
            u = self._zero_u(w)
            if self.expects != "bound":
                (loss, losses), grads = nnx.value_and_grad(
                    lambda m: objective(m, u), argnums=nnx.DiffState(0, wrt), has_aux=True
                )(model)
                return (loss, self._scores(None, w, losses)), grads
            (loss, losses), (grads, grad_u) = nnx.value_and_grad(
                objective, argnums=(nnx.DiffState(0, wrt), 1), has_aux=True
            )(model, u)
            return (loss, self._scores(grad_u, w, losses)), grads

        return grad_fn

    def _equinox_step(self, loss_fn: LossFn) -> Callable[..., Any]:
        eqx = _equinox()

        def grad_fn(model: Any, x: Any, y: Any, w: Any) -> tuple[tuple[jax.Array, jax.Array], Any]:
            w = _check_weights(w)
            objective = self._objective(loss_fn, x, y, w, True)
            u = self._zero_u(w)
            (loss, losses), (grads, grad_u) = eqx.filter_value_and_grad(
                lambda pair: objective(*pair), has_aux=True
            )((model, u))
            return (loss, self._scores(grad_u, w, losses)), grads

        return grad_fn

    def _pytree_step(self, loss_fn: LossFn) -> Callable[..., Any]:
        def grad_fn(params: Any, x: Any, y: Any, w: Any) -> tuple[tuple[jax.Array, jax.Array], Any]:
            w = _check_weights(w)
            objective = self._objective(loss_fn, x, y, w, True)
            u = self._zero_u(w)
            (loss, losses), (grads, grad_u) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
                params, u
            )
            return (loss, self._scores(grad_u, w, losses)), grads

        return grad_fn

    # -- scores: jax arrays wait on the device, one host copy per group ------------------------

    def update(self, indices: Any, scores: Any) -> None:
        """Record the scores of examples just trained (see :meth:`sadp_core.Pruner.update`).

        JAX arrays (``grad_fn``'s scores) are not copied to the host here: they wait on the
        device and are written in groups, with one host copy per group, before any read of
        the table (``scores``, ``plan``, ``stats``, ``state_dict``). So ``update`` never
        waits for the step to finish. Shapes and indices are checked at once; values (NaN,
        negative) when the group is written.
        """
        if isinstance(scores, jax.core.Tracer):
            raise SADPError("update() got a traced value: call it outside jit, with grad_fn's results")
        if not isinstance(scores, jax.Array):
            self._record_pending()
            super().update(indices, scores)
            return
        index_array = np.array(self._check_indices(indices), dtype=np.int64)
        if scores.ndim != 1 or scores.shape[0] != index_array.shape[0]:
            raise SADPError(
                f"scores must be one score per index: got {index_array.shape[0]} indices and scores "
                f"of shape {tuple(scores.shape)}"
            )
        self._pending.append((index_array, scores))
        if len(self._pending) >= _RECORD_EVERY:
            self._record_pending()

    def _record_pending(self) -> None:
        if not self._pending:
            return
        entries, self._pending = self._pending, []
        indices = np.concatenate([index for index, _ in entries])
        # one transfer of the whole group; no device op, so no compilation for a new group size
        host = jax.device_get([score for _, score in entries])
        values = np.concatenate([np.asarray(score, dtype=np.float64).reshape(-1) for score in host])
        if len(entries) > 1 and np.unique(indices).size < indices.size:  # drawn with replacement
            last = indices.size - 1 - np.unique(indices[::-1], return_index=True)[1]  # the latest wins
            indices, values = indices[last], values[last]
        self._record(indices, values)

    @property
    def scores(self) -> np.ndarray:
        """The latest score of every example (NaN where none yet); writes waiting scores first."""
        self._record_pending()
        return super().scores

    @property
    def stats(self) -> PrunerStats:
        self._record_pending()
        return super().stats

    def plan(self, epoch: int) -> Plan:
        self._record_pending()
        return super().plan(epoch)

    # -- life cycle --------------------------------------------------------------------------

    def detach(self) -> None:
        """Write waiting scores and give the readout its own class back."""
        self._record_pending()
        module = self._readout
        if module is not None and hasattr(type(module), "_sadp_original"):
            module.__class__ = type(module)._sadp_original
        self._readout = None
        self._detached = True

    def __enter__(self) -> JaxHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def state_dict(self) -> dict[str, Any]:
        """The Pruner state (numpy arrays) plus the epoch counter of :meth:`batches`."""
        self._record_pending()
        state = super().state_dict()
        state["jax"] = {"next_epoch": self._next_epoch, "readout": self.readout_name}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        jax_state = state.get("jax") if isinstance(state, dict) else None
        if jax_state and jax_state.get("readout") != self.readout_name:
            raise SADPError(
                f"this state was saved with readout={jax_state.get('readout')!r}; "
                f"this handle's readout is {self.readout_name!r}"
            )
        self._pending = []
        super().load_state_dict(state)
        if jax_state:
            self._next_epoch = int(jax_state["next_epoch"])


# -- checks and dispatch ------------------------------------------------------------------------


def _strengthen_weak_types(model: Any, nnx: Any) -> None:
    """Give weakly typed float parameters (spyx's ``LI.beta``, ...) a strong type, same values.

    A weakly typed parameter becomes strongly typed after the first optimizer update, which
    makes a jitted step compile a second time (and a third, through the optimizer's state).
    """
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable):
            value = node.get_value()
            if isinstance(value, jax.Array) and value.weak_type and jnp.issubdtype(value.dtype, jnp.floating):
                node.set_value(jnp.asarray(value, dtype=value.dtype))


def _as_types(neurons: tuple[type, ...] | type | None) -> tuple[type, ...]:
    if neurons is None:
        return ()
    values = (neurons,) if isinstance(neurons, type) else neurons
    if not isinstance(values, tuple) or not all(isinstance(v, type) for v in values):
        raise SADPError(f"neurons must be a class or a tuple of classes, got {neurons!r}")
    return values


def _check_weights(weights: Any) -> jax.Array:
    w: jax.Array = jnp.asarray(weights)
    if w.ndim != 1 or not jnp.issubdtype(w.dtype, jnp.floating):
        raise SADPError(
            f"w must be the [B] float weights that h.batches() gave with the indices, got shape "
            f"{tuple(w.shape)} and dtype {w.dtype}"
        )
    return w


def _check_losses(losses: Any, batch: int) -> jax.Array:
    shape = tuple(getattr(losses, "shape", ()))
    if shape != (batch,):
        hint = (
            "; reduce the other axes per example first, e.g. losses.mean(axis=1)"
            if shape[:1] == (batch,)
            else ""
        )
        raise SADPError(
            f"loss_fn must return [B] per-example losses (not reduced) for {batch} examples, got shape "
            f"{shape}{hint}"
        )
    return jnp.asarray(losses)


def _is_array_pytree(model: Any) -> bool:
    leaves = jax.tree_util.tree_leaves(model)
    return (
        bool(leaves)
        and all(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves)
        and any(isinstance(leaf, jax.Array) for leaf in leaves)
    )


def accepts(model: Any) -> bool:
    """True for a flax NNX module, an equinox module, or a pytree of jax arrays."""
    nnx, eqx = _nnx(), _equinox()
    if nnx is not None and isinstance(model, nnx.Module):
        return True
    if eqx is not None and isinstance(model, eqx.Module):
        return True
    try:
        return _is_array_pytree(model)
    except Exception:  # not a pytree jax can flatten
        return False


def attach(model: Any, **options: Any) -> JaxHandle:
    """Attach spike-aware pruning to a JAX model; see :class:`JaxHandle`."""
    return JaxHandle(model, **options)
