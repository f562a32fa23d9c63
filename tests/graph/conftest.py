"""Graph tests import config helpers (``from configs import common``); under
``--import-mode=importlib`` the checkout is on sys.path only with ``python -m pytest``, so put it
there for ``pytest`` too."""

import pathlib
import sys

ROOT = str(pathlib.Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
