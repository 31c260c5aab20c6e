"""Apply a trained network to whole images and hand back images of the same kind.

- :mod:`.restorer`: the orchestration (prepare, detect, refine the mask, inpaint,
  compose, hand back);
- :mod:`.execution`: how the network runs (device, flips, tiles, crops, memory);
- :mod:`.postprocess`: the named, switchable steps between the network and the
  output, and the config that says which run.
"""

from annot_denoise.inference.postprocess import (
    DEFAULT_STEPS,
    STEPS,
    PostprocessConfig,
    with_steps,
)
from annot_denoise.inference.restorer import Restored, Restorer

__all__ = ["DEFAULT_STEPS", "STEPS", "PostprocessConfig", "Restored", "Restorer", "with_steps"]
