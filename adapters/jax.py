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

Two ways to put the tap on the readout (the taps themselves are in ``_jax_tap``):

- **flax NNX models** (``spyx.nn.Sequential`` run by ``spyx.nn.run``, or your own
  ``nnx.Module``): ``attach`` finds the readout, the last ``nnx.Linear`` (or ``nnx.Conv``) outside the
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

``scope="all"`` (flax NNX, with the class swap) taps every ``nnx.Linear`` and ``nnx.Conv``
layer outside the neurons, each with its own ``u``, and combines the per-layer bounds as
``sqrt(sum_l B_l^2)``, as the torch handle does.

Length: about 760 lines, nearly all of it :class:`JaxHandle`, whose gradient function,
score bookkeeping and batch checks share the handle's private state; the taps
(``_jax_tap``) and the flax NNX glue (``_jax_nnx``: finding and tapping layers) are
already their own modules.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from sadp_core.errors import SADPError, SADPWarning
from sadp_core.pruner import Plan, Pruner, PrunerStats

from ._jax_nnx import (
    Layer,
    Slot,
    nnx_module,
    scan_model,
    spyx_neurons,
    strengthen_weak_types,
    tap_layer,
    untap_layer,
)
from ._jax_tap import TAP_CALLS, conv_tap, tap
from ._options import check_score_options

__all__ = ["EpochBatches", "JaxHandle", "accepts", "attach", "conv_tap", "tap"]

_RECORD_EVERY = 64  # updates whose scores wait on the device for one host copy

LossFn = Callable[..., Any]
GradFn = Callable[[Any, Any, Any, Any], tuple[tuple[jax.Array, jax.Array], Any]]
U: TypeAlias = jax.Array | tuple[jax.Array, ...]  # one zero array, or one per tapped layer (see _zero_u)


def _nnx() -> Any:
    return nnx_module()


def _equinox() -> Any:
    return sys.modules.get("equinox")


# -- the handle -------------------------------------------------------------------------------


class EpochBatches:
    """The batches of one epoch's plan: ``(indices, weights)`` numpy pairs.

    ``indices`` are int64 example indices, ``weights`` the float32 loss weights of the
    plan (train on ``mean(weights * per_example_loss)``). Iterating it again gives the same
    batches; the last batch may be short (``drop_last=False``). The handle notes every
    batch handed out, to report those whose scores never reach :meth:`JaxHandle.update`.
    """

    def __init__(
        self, plan: Plan, batch_size: int, drop_last: bool, handed_out: Callable[[np.ndarray | None], None]
    ) -> None:
        self.plan, self.batch_size = plan, batch_size
        self.epoch = plan.epoch
        self._weights = plan.weights.astype(np.float32)
        self._handed_out = handed_out
        size = len(plan.indices)
        self._stop = size - size % batch_size if drop_last else size

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        indices, weights = self.plan.indices, self._weights
        for start in range(0, self._stop, self.batch_size):
            batch = indices[start : start + self.batch_size]
            self._handed_out(batch)
            yield batch, weights[start : start + self.batch_size]
        self._handed_out(None)  # the loop over the epoch is over

    def __len__(self) -> int:
        return -(-self._stop // self.batch_size)


class JaxHandle(Pruner):
    """A :class:`~sadp_core.Pruner` attached to a JAX SNN (see :func:`sadp_core.attach`).

    Args:
        model: a flax NNX module (spyx or your own), an equinox module, or a pytree of
            parameters (for a hand-written model).
        readout: flax NNX only: the readout ``nnx.Linear`` (or ``nnx.Conv``), by dotted
            path (``"layers.2"``) or as the module; found automatically (the last Linear or
            Conv layer outside the neurons) if None.
        scope: ``"readout"`` (default) or ``"all"``: flax NNX only (the class swap), every
            ``nnx.Linear`` and ``nnx.Conv`` layer outside the neurons is tapped and the
            per-layer bounds ``B_l`` are combined as ``sqrt(sum_l B_l^2)``, as the torch
            handle does (DESIGN.md section 2).
        score: ``"bound"`` (the spike-aware bound, default) or ``"exact"`` (the exact norm
            of each example's gradient on the tapped Linear layers; ``B C (F + 1)`` more
            numbers in memory per layer).
        functional: flax NNX only: do not swap the readout's class; ``loss_fn`` takes ``u``
            and applies :func:`tap` itself (always so for equinox and pytrees).
        neurons: classes of your own spiking layers (flax NNX), for the check that the model
            spikes and to skip Linear layers inside them. spyx neurons, and any module with
            ``initial_state`` and ``spike`` methods, are known already.
        readout_shape: ``(C, F)``, the readout's outputs and inputs: needed by
            ``score="exact"`` when the tap is applied by hand.
        **options: the :class:`~sadp_core.Pruner` options (``num_examples``, ``epochs``, ...).

    Example (``scope="all"``: both Linear layers of a spyx MLP are tapped):
        >>> import jax.numpy as jnp, numpy as np, optax, spyx, sadp_core
        >>> from flax import nnx
        >>> rngs = nnx.Rngs(0)
        >>> model = spyx.nn.Sequential(nnx.Linear(8, 16, rngs=rngs), spyx.nn.LIF((16,), rngs=rngs),
        ...                            nnx.Linear(16, 3, rngs=rngs), spyx.nn.LI((3,), rngs=rngs))
        >>> h = sadp_core.attach(model, num_examples=4, epochs=2, scope="all")
        >>> h.layer_names
        ['layers.0', 'layers.2']
        >>> def loss_fn(model, x, y):
        ...     out, _ = spyx.nn.run(model, x)
        ...     return optax.softmax_cross_entropy_with_integer_labels(out.mean(0), y)
        >>> x = jnp.ones((4, 4, 8)); y = jnp.arange(4) % 3; w = jnp.ones(4)
        >>> (loss, scores), grads = h.value_and_grad(loss_fn)(model, x, y, w)
        >>> scores.shape
        (4,)
        >>> h.detach()
    """

    def __init__(
        self,
        model: Any,
        *,
        readout: Any = None,
        scope: str = "readout",
        score: str = "bound",
        functional: bool = False,
        neurons: tuple[type, ...] | type | None = None,
        readout_shape: tuple[int, int] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        check_score_options(scope, score)
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
        self.model, self.scope, self.score_kind = model, scope, score
        self.functional = bool(functional) or self.framework != "nnx"
        self.readout_name: str | None = None
        self.layer_names: list[str] = []  # the tapped layers (flax NNX, not functional)
        self._layers: list[Layer] = []
        self._slots: list[Slot] = []
        self._shapes: list[tuple[int, int]] = []  # (C, F) of every tapped Linear layer (score="exact")
        if self.framework != "nnx" and readout is not None:
            raise SADPError(
                f"readout= selects a layer of a flax NNX model; for a {self.framework} model apply "
                "sadp_core.adapters.jax.tap(output, inputs, u) to the readout output in your loss"
            )
        if scope == "all" and self.functional:
            raise SADPError(
                "scope='all' taps the nnx.Linear and nnx.Conv layers that attach() finds in a flax NNX "
                f"model; a {self.framework} model{' attached with functional=True' if functional else ''} "
                "taps only the readout, by hand with tap(): use scope='readout', or attach the flax NNX "
                "model without functional=True"
            )
        if not self.functional:
            self._attach_layers(model, nnx, readout, _as_types(neurons))
        elif readout_shape is not None:
            if (
                not isinstance(readout_shape, tuple)
                or len(readout_shape) != 2
                or not all(isinstance(n, int) and n > 0 for n in readout_shape)
            ):
                raise SADPError(f"readout_shape must be (C, F), two positive ints, got {readout_shape!r}")
            self._shapes = [readout_shape]
        if score == "exact" and not self._shapes:
            raise SADPError(
                "score='exact' with a tap applied by hand needs readout_shape=(C, F): the readout's "
                "number of outputs C and inputs F"
            )
        if self.framework == "nnx":
            strengthen_weak_types(model, nnx)
        self._next_epoch = 0
        self._pending: list[tuple[np.ndarray, jax.Array]] = []
        self._detached = False
        # batches handed out by batches() and not yet checked for an update (see _check_handed)
        self._handed: list[tuple[int, np.ndarray]] = []
        self._serial = 0  # batches handed out so far
        self._settled = 0  # batches handed out by epochs whose loop has ended
        self._stamps = np.full(self.num_examples, -1, dtype=np.int64)  # serial at each example's update
        self._unscored_batches = 0
        self._member: np.ndarray | None = None  # examples of the plan handed out last
        self._member_plan: Plan | None = None

    @property
    def _readout(self) -> Any:
        """The readout module (flax NNX with the class swap), None otherwise or once detached."""
        return next((layer.module for layer in self._layers if layer.name == self.readout_name), None)

    def _attach_layers(self, model: Any, nnx: Any, readout: Any, neurons: tuple[type, ...]) -> None:
        """Choose the readout and tap it (``scope="readout"``) or every candidate layer."""
        known = (*spyx_neurons(), *neurons)
        candidates, spiking = scan_model(model, nnx, known)
        if not spiking:
            raise SADPError(
                f"no spiking layer found in {type(model).__name__}: expected spyx neurons (LIF, ALIF, "
                "CuBaLIF, ...) or modules with initial_state() and spike(); pass neurons=(YourNeuron,) "
                "for your own neuron class, or use sadp_core.Pruner directly"
            )
        names = [layer.name for layer in candidates]
        if readout is None:
            if not candidates:
                raise SADPError(
                    f"no nnx.Linear or nnx.Conv outside the spiking neurons of {type(model).__name__}: "
                    "nothing to use as the readout; pass readout='path.to.layer', or attach(..., "
                    "functional=True) and apply sadp_core.adapters.jax.tap() to the readout output"
                )
            chosen = candidates[-1]
        else:
            if isinstance(readout, str):
                found = [layer for layer in candidates if layer.name == readout]
                name = readout
            else:
                found = [layer for layer in candidates if layer.module is readout]
                name = repr(type(readout).__name__)
            if not found:
                raise SADPError(
                    f"readout={name!r} is not an nnx.Linear or nnx.Conv layer of the model outside its "
                    f"neurons; choose one of {names}"
                )
            chosen = found[0]
        layers = candidates if self.scope == "all" else [chosen]
        if self.score_kind == "exact":
            for layer in layers:
                if layer.kind != "Linear":
                    raise SADPError(
                        f"score='exact' supports Linear layers only; {layer.name!r} is {layer.kind}"
                    )
        tapped: list[Layer] = []
        try:
            for layer in layers:
                self._slots.append(tap_layer(layer))
                tapped.append(layer)
        except SADPError:
            for layer in tapped:  # leave the model as it was
                untap_layer(layer.module)
            self._slots = []
            raise
        self._layers = layers
        self._shapes = [
            (int(layer.module.out_features), int(layer.module.in_features))
            for layer in layers
            if layer.kind == "Linear"
        ]
        self.readout_name = chosen.name
        self.layer_names = [layer.name for layer in layers]

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
        self._check_handed(everything=True)  # the batches of the epochs before, now
        plan = self.plan(self._next_epoch)
        self._next_epoch += 1
        self._member_plan, self._member = plan, None
        return EpochBatches(plan, batch_size, drop_last, self._handed_out)

    def _handed_out(self, indices: np.ndarray | None) -> None:
        """:class:`EpochBatches` hands out ``indices`` (None: the loop over an epoch ended)."""
        if indices is None:
            self._settled = self._serial
            return
        self._serial += 1
        self._handed.append((self._serial, indices))

    def _check_handed(self, everything: bool) -> None:
        """Count and report the batches handed out whose examples got no :meth:`update`.

        A batch is checked once its epoch's loop has ended (or, with ``everything``, once
        the next epoch's batches are asked for, and at :meth:`detach` or
        :meth:`synchronize`): updates deferred to the end of an epoch are not reported.
        """
        limit = self._serial if everything else self._settled
        if not self._handed or self._handed[0][0] > limit:
            return
        checked = [entry for entry in self._handed if entry[0] <= limit]
        self._handed = [entry for entry in self._handed if entry[0] > limit]
        missed = sum(1 for serial, indices in checked if not (self._stamps[indices] >= serial).any())
        if missed:
            if not self._unscored_batches:
                warnings.warn(
                    f"{missed} batch(es) handed out by h.batches() got no scores: their indices never "
                    "reached h.update(idx, scores) (call it after every grad_fn step, with that step's "
                    "scores); the table keeps their earlier scores. Counted in h.stats.unscored_batches",
                    SADPWarning,
                    stacklevel=3,
                )
            self._unscored_batches += missed

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

    def _zero_u(self, w: jax.Array) -> U:
        """The zero ``u`` for a batch of weights ``w``, sharded as ``w`` along its batch axis:
        one array for a tap applied by hand, a tuple of one per tapped layer otherwise.

        Made from ``w`` rather than from its shape: under a mesh with explicit axes
        (``jax.make_mesh``'s default) a new ``jnp.zeros((B,))`` would be replicated while
        the tap's backward returns ``grad_u`` sharded as the batch, a type mismatch that
        ``custom_vjp`` refuses. Under automatic axes or on one device it changes nothing.
        """
        zeros = jnp.zeros_like(w, dtype=jnp.float32)
        if self.score_kind == "exact":
            shapes = [(w.shape[0], classes, features + 1) for classes, features in self._shapes]
            per_layer = tuple(jnp.broadcast_to(zeros[:, None, None], shape) for shape in shapes)
        else:
            per_layer = (zeros,) * max(1, len(self._slots))
        return per_layer[0] if self.functional else per_layer

    @contextlib.contextmanager
    def _tracing(self, u: U | None) -> Iterator[list[int]]:
        """While ``loss_fn`` traces: hand each tapped layer its ``u``, count the taps applied."""
        if self._detached:
            raise SADPError("this handle is detached; attach the model again to train with pruning")
        calls: list[int] = []
        token = TAP_CALLS.set(calls)
        if u is not None and self._slots:
            for slot, u_layer in zip(self._slots, u, strict=True):
                slot.u = u_layer
        try:
            yield calls
        finally:
            TAP_CALLS.reset(token)
            for slot in self._slots:
                slot.u = None

    def _check_tapped(self, calls: list[int], batch: int) -> None:
        if not calls:
            if self.functional:
                where = "loss_fn never applied sadp_core.adapters.jax.tap(output, inputs, u) to the readout"
            elif self.scope == "all":
                where = f"none of the tapped layers {self.layer_names} ran in loss_fn"
            else:
                name = self.readout_name
                where = f"the readout {name!r} never ran in loss_fn (is it the readout? pass readout=)"
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

        def objective(model: Any, u: U) -> tuple[jax.Array, jax.Array]:
            with self._tracing(u if wants_bound else None) as calls:
                losses = loss_fn(model, x, y, u) if with_u else loss_fn(model, x, y)
                if wants_bound:
                    self._check_tapped(calls, batch)
            losses = _check_losses(losses, batch)
            return jnp.mean(w.astype(losses.dtype) * losses), losses

        return objective

    def _scores(self, grad_u: U | None, w: jax.Array, losses: jax.Array) -> jax.Array:
        """Per-example scores from ``dloss/du``: each layer's share (its bound, or the norm of
        its exact gradient), combined over layers as ``sqrt(sum_l share_l^2)``, with the
        weight and the batch mean undone."""
        if grad_u is None or self.expects != "bound":
            return jax.lax.stop_gradient(losses).astype(jnp.float32)
        batch = w.shape[0]
        per_layer = grad_u if isinstance(grad_u, tuple) else (grad_u,)
        shares = [
            g if g.ndim == 1 else jnp.sqrt(jnp.sum(jnp.square(g.reshape(batch, -1)), 1)) for g in per_layer
        ]
        share = shares[0] if len(shares) == 1 else jnp.sqrt(sum(jnp.square(s) for s in shares))
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
        negative) when the group is written. Once :meth:`batches` has handed out an epoch,
        the indices must be examples of its plan.
        """
        if isinstance(scores, jax.core.Tracer):
            raise SADPError("update() got a traced value: call it outside jit, with grad_fn's results")
        if not isinstance(scores, jax.Array):
            self._record_pending()
            index_array = np.array(self._check_indices(indices), dtype=np.int64)
            checked, values = self._checked_scores(index_array, scores)  # shapes and values first
            self._check_in_plan(index_array)
            self._table.record(checked, values, self._config["decay"])
            self._stamps[index_array] = self._serial
            return
        if not scores.is_fully_addressable:
            raise SADPError(
                "update() got scores spread over several processes (multi-process JAX, jax.distributed): "
                "the JAX handle keeps one score table per process and reads scores on this process only; "
                "train with one process over all devices (a jax mesh), or gather the scores first"
            )
        index_array = np.array(self._check_indices(indices), dtype=np.int64)
        if scores.ndim != 1 or scores.shape[0] != index_array.shape[0]:
            raise SADPError(
                f"scores must be one score per index: got {index_array.shape[0]} indices and scores "
                f"of shape {tuple(scores.shape)}"
            )
        self._check_in_plan(index_array)
        self._stamps[index_array] = self._serial
        self._pending.append((index_array, scores))
        if len(self._pending) >= _RECORD_EVERY:
            self._record_pending()

    def _check_in_plan(self, index_array: np.ndarray) -> None:
        """The same mistake as indices outside the plan in the torch handle's ``weighted_loss``."""
        plan = self._member_plan
        if plan is None:
            return  # no epoch handed out by batches(): updates are the Pruner's, unrestricted
        if self._member is None:
            self._member = np.zeros(self.num_examples, dtype=bool)
            self._member[plan.indices] = True
        inside = self._member[index_array]
        if not inside.all():
            missing = index_array[~inside][:5].tolist()
            raise SADPError(f"examples {missing} are not in the plan of epoch {plan.epoch}; use its batches")

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

    def synchronize(self) -> None:
        """Write the scores still waiting on the device, and report batches left unscored.

        The torch handle's ``synchronize`` exchanges scores between ``torch.distributed``
        ranks. A JAX handle has nothing to exchange: data-parallel training on a mesh runs
        in one process, and ``grad_fn`` returns the scores of the whole (sharded) batch, so
        the one score table sees every device's examples (``tests/test_jax_mesh.py``).
        Multi-process JAX (``jax.distributed``) is refused by :meth:`update`. Calling it is
        never needed (every read of the table writes the waiting scores first) but is safe
        anywhere, e.g. before saving a checkpoint, as with torch.
        """
        self._record_pending()
        self._check_handed(everything=True)

    @property
    def scores(self) -> np.ndarray:
        """The latest score of every example (NaN where none yet); writes waiting scores first."""
        self._record_pending()
        return super().scores

    @property
    def stats(self) -> PrunerStats:
        """The :class:`~sadp_core.PrunerStats`, with ``unscored_batches``: batches handed out
        by :meth:`batches` whose indices got no :meth:`update` (each reported once with an
        :class:`~sadp_core.SADPWarning`; checked when that epoch's loop has ended, when the
        next epoch's batches are asked for, and at :meth:`synchronize` and :meth:`detach`)."""
        self._record_pending()
        self._check_handed(everything=False)
        return super().stats._replace(unscored_batches=self._unscored_batches)

    def plan(self, epoch: int) -> Plan:
        self._record_pending()
        return super().plan(epoch)

    # -- life cycle --------------------------------------------------------------------------

    def detach(self) -> None:
        """Write waiting scores and give every tapped layer its own class back."""
        self.synchronize()
        for layer in self._layers:
            untap_layer(layer.module)
        self._layers, self._slots = [], []
        self._detached = True

    def __enter__(self) -> JaxHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def state_dict(self) -> dict[str, Any]:
        """The Pruner state (numpy arrays) plus the epoch counter of :meth:`batches`, the
        scope, the readout and the count of unscored batches (as the torch handle's)."""
        self._record_pending()
        state = super().state_dict()
        state["jax"] = {
            "next_epoch": self._next_epoch,
            "scope": self.scope,
            "readout": self.readout_name,
            "unscored_batches": self._unscored_batches,
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        jax_state = state.get("jax") if isinstance(state, dict) else None
        saved = (jax_state.get("scope", "readout"), jax_state.get("readout")) if jax_state else None
        if saved is not None and saved != (self.scope, self.readout_name):
            raise SADPError(
                f"this state was saved with scope={saved[0]!r}, readout={saved[1]!r}; "
                f"this handle has scope={self.scope!r}, readout={self.readout_name!r}"
            )
        super().load_state_dict(state)
        self._pending, self._handed = [], []
        self._member_plan, self._member = None, None
        self._stamps[:] = -1
        if jax_state:
            self._next_epoch = int(jax_state["next_epoch"])
            self._unscored_batches = int(jax_state.get("unscored_batches", 0))


# -- checks and dispatch ------------------------------------------------------------------------


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
