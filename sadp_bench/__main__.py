"""``python -m sadp_bench ...``: the same as the ``sadp-bench`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m sadp_bench"))
