"""The exceptions and warnings sadp-core raises.

Every input error is an :class:`SADPError`, a :class:`ValueError`, so code that already
catches ``ValueError`` keeps working. Its message says what was wrong and what to do.
"""

from __future__ import annotations

__all__ = ["SADPError", "SADPWarning"]


class SADPError(ValueError):
    """Bad input to sadp-core: the message names the argument and the fix."""


class SADPWarning(UserWarning):
    """Something was ignored (for instance a non-finite score) and counted in the stats."""
