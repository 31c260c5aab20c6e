"""Drawers for the quality benchmark: every built-in style but one, for training.

Imported by name (``heldout:draw_seen``) inside DataLoader workers, so it must
stay a plain module beside bench/quality.py, which puts this folder on the path.
"""

from __future__ import annotations

import os

import numpy as np

from annot_denoise.synth.drawers import MIXED_ODDS, draw_mixed

HELD_OUT = os.environ.get("ANNOT_DENOISE_HELD_OUT", "arrows")
COLORS = ("white", "yellow", "cyan", "green")


def draw_seen(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random combination of every built-in drawer except the held-out one."""
    parts = [name for name in MIXED_ODDS if name != HELD_OUT]
    return draw_mixed(image, rng, colors=COLORS, parts=parts)
