"""The handle options that every framework adapter accepts, checked in one place."""

from __future__ import annotations

from sadp_core.errors import SADPError

SCOPES = ("readout", "all")
SCORES = ("bound", "exact")


def check_score_options(scope: str, score: str) -> None:
    """Refuse a ``scope`` or ``score`` that no adapter knows, naming the choices.

    >>> check_score_options("all", "bound")
    >>> check_score_options("hidden", "bound")
    Traceback (most recent call last):
    ...
    sadp_core.errors.SADPError: scope must be 'readout' or 'all', got 'hidden'
    """
    if scope not in SCOPES:
        raise SADPError(f"scope must be 'readout' or 'all', got {scope!r}")
    if score not in SCORES:
        raise SADPError(f"score must be 'bound' or 'exact', got {score!r}")
