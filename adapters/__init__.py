"""Framework adapters, installed as ``sadp_core.adapters``.

Each adapter turns a framework's model into the common trace (per-step spike norms and
error norms, time-major ``[T, B]``) and nothing more; the core does the rest.
"""
