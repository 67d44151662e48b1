"""Where this repository's own files are: the one `REPO` constant the app, the trainer, the
benchmarks and the tests share (imports nothing; `import sat.paths` does no work).

    from sat.paths import REPO, WEIGHTS, EXAMPLES
    WEIGHTS / "soft"   # the bundled soft-attention weights
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding app.py, sat/, train/, assets/)."""
ASSETS = REPO / "assets"
WEIGHTS = ASSETS / "weights"
"""The bundled weights folders: WEIGHTS / "soft", WEIGHTS / "hard"."""
EXAMPLES = ASSETS / "examples"
"""The app's example images (scenes from the test split)."""
