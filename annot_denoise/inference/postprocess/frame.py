"""What a post-processing step sees and changes: one image's frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict


class StepConfig(BaseModel):
    """A step's own constants: strict, so a misspelt key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass
class Frame:
    """One image between the network and the written output.

    Steps read and replace these fields; the restorer builds the frame, runs the
    steps of each stage, and writes ``fill`` into ``hole`` over ``image``.
    """

    net: np.ndarray  # float H x W x C in [0, 1]: the network's input
    detected: np.ndarray  # bool H x W: the marks found (or given)
    prob: np.ndarray | None = None  # float H x W: the detector's probability
    image: np.ndarray | None = None  # the input's colour planes, its dtype (composition)
    hole: np.ndarray | None = None  # bool H x W: the pixels that may change
    fill: np.ndarray | None = None  # float H x W x C: the repair, read inside ``hole``
