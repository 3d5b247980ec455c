"""Cost measurements: the core's hot paths and the per-step overhead of each adapter.

:mod:`.core` (``sadp-bench speed``: ``Pruner.plan`` and ``Pruner.update``, numpy only),
:mod:`.torch`, :mod:`.jax`, :mod:`.distributed` and :mod:`.taps` (``sadp-bench overhead
NAME``). Each module has its own ``main(argv, prog)`` and prints its figures; none is
asserted (shared CPUs are noisy).
"""
