"""How the network runs: tiles in passes sized for the device, the same outputs
whatever the batching, and where the restorer's time goes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annot_denoise.inference import Restorer
from annot_denoise.inference.execution import TILE_PIXELS_CPU
from annot_denoise.phantom import make_phantom
from annot_denoise.pretrained import resolve_model
from annot_denoise.synth.pipeline import annotate
from annot_denoise.training.checkpoint import load_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def default_model():
    return load_model(resolve_model(None))


def _annotated(h: int, w: int, seed: int) -> np.ndarray:
    scan = make_phantom(h, w, np.random.default_rng(seed))
    return annotate(scan, "mixed", np.random.default_rng(seed))[1]


def test_tiles_per_pass_bounds_the_cpu_batch() -> None:
    from standins import MarksAreBright

    r = Restorer(MarksAreBright(), channels=3, device=CPU, batch_size=8)
    assert r.tiles_per_pass(1024 * 1024) == 1  # a large tile alone
    assert r.tiles_per_pass(TILE_PIXELS_CPU // 4) == 4
    assert r.tiles_per_pass(64 * 64) == 8  # never more than batch_size


def test_tiled_outputs_do_not_depend_on_the_batch(default_model) -> None:
    """Each tile is computed on its own: one per pass or several, the same bits."""
    model, ckpt = default_model
    image = _annotated(200, 260, 3)
    outs = []
    for batch in (1, 5):
        r = Restorer.from_checkpoint(model, ckpt, CPU, tile=64, batch_size=batch)
        outs.append(r.restore([image])[0])
    assert not np.array_equal(outs[0].image, image)  # marks were found and removed
    assert np.array_equal(outs[0].image, outs[1].image)
    assert np.array_equal(outs[0].mask, outs[1].mask)


def test_batched_images_equal_one_at_a_time(default_model) -> None:
    model, ckpt = default_model
    images = [_annotated(96, 128, s) for s in range(3)] + [_annotated(80, 144, 9)]
    r = Restorer.from_checkpoint(model, ckpt, CPU, batch_size=4)
    together = r.restore(images)
    for image, result in zip(images, together):
        alone = r.restore([image])[0]
        assert np.array_equal(alone.image, result.image)
        assert np.array_equal(alone.mask, result.mask)


def test_the_restorer_says_where_its_time_went(default_model) -> None:
    model, ckpt = default_model
    r = Restorer.from_checkpoint(model, ckpt, CPU)
    r.restore([_annotated(96, 128, 1)])
    stages = r.stages.snapshot()
    assert {"detect", "inpaint", "postprocess"} <= set(stages)
    assert all(v["wall_s"] >= 0 and v["cpu_s"] >= 0 for v in stages.values())
