"""Lets the scripts of this folder import the installed ``sadp_bench`` package.

Python puts the folder of the script it runs first on ``sys.path``; this folder holds
``sadp_bench.py``, which would hide the package of the same name. Importing this module
takes the folder off ``sys.path`` again.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
