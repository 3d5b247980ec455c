"""Small helpers over the Array API: namespaces, dtypes, and host copies.

Nothing here imports torch or jax: arrays are recognised through
:mod:`array_api_compat`, which looks at ``sys.modules`` lazily.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from .errors import SADPError

Array = Any
"""Any array of an Array API library (numpy, array-api-strict, torch, jax, ...)."""


def namespace(*arrays: Array, xp: Any = None) -> Any:
    """The Array API namespace of ``arrays``, or ``xp`` when it is given."""
    if xp is not None:
        return xp
    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as error:
        kinds = ", ".join(sorted({type(a).__name__ for a in arrays}))
        raise SADPError(
            f"expected arrays of one Array API library (numpy, torch, jax, ...), got {kinds}; "
            "convert Python lists with numpy.asarray"
        ) from error


def as_floating(x: Array, xp: Any, name: str) -> Array:
    """``x`` itself if it is real floating point, else cast to the namespace's default float."""
    if xp.isdtype(x.dtype, "real floating"):
        return x
    if xp.isdtype(x.dtype, ("bool", "integral")):
        default = xp.__array_namespace_info__().default_dtypes()["real floating"]
        return xp.astype(x, default)
    raise SADPError(f"{name} must hold real numbers, got dtype {x.dtype}")


def concrete_any(condition: Array) -> bool | None:
    """``bool(any(condition))``, or ``None`` when the values are not known yet (inside ``jax.jit``)."""
    xp = array_api_compat.array_namespace(condition)
    try:
        return bool(xp.any(condition))
    except TypeError:  # a tracer: values are only known at run time
        return None


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A host numpy copy (or view) of an array of any Array API library.

    Accepts numpy arrays, Python sequences, and arrays that support DLPack or
    ``__array__`` (torch tensors on any device, jax arrays, array-api-strict arrays).
    """
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple, range, int, float)):
        return np.asarray(x)
    if array_api_compat.is_torch_array(x):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
    elif array_api_compat.is_array_api_obj(x) and not array_api_compat.is_numpy_array(x):
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError, AttributeError):
            pass
    try:
        return np.asarray(x)
    except (TypeError, RuntimeError, ValueError) as error:
        raise SADPError(
            f"{name} must be an array (numpy, torch, jax, ...) or a sequence of numbers, "
            f"got {type(x).__name__}"
        ) from error
