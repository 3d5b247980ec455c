"""The benchmark's report: :mod:`.summary` (merged records and their means over seeds),
:mod:`.tables`, :mod:`.plots` and :mod:`.page` (``docs/benchmarks.md``). It imports numpy and
matplotlib, never torch or JAX."""
