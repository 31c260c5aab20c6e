"""The restorer's outputs, byte for byte, on seeded scans: a refactor changes nothing.

Every scene below is built from a fixed seed and restored by stand-in networks
whose outputs are exact (no convolutions, no mixed precision), so the hashes do
not depend on the machine. Together the scenes reach every mode (two stages,
given masks, test-time flips, tiles, one stage, resized) and every step of the
post-processing. The scenes were drawn for the rules the ablation since deleted
(labels on the black surround, readout boxes, grey scans); they stay, as scans
where the steps that remain and the network's own repair must not drift. A
change that is meant to change outputs updates the file with

    ANNOT_DENOISE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

and says so in its commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from standins import BrightMarksInTwoStages, FixedDetections, MarksAreBright
from torch import nn

from annot_denoise.inference import Restorer
from annot_denoise.io import read_image

GOLDEN = Path(__file__).parent / "golden" / "restorer.json"
CPU = torch.device("cpu")


def sector_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB scan, its marks): grey tissue in a sector on black, with a label on the
    black, one across the sector's edge, a yellow anti-aliased caliper, a bright
    patch of tissue at the edge (the scan's own edge, not a mark), a translucent
    readout box and an opaque one, and a solid arrowhead."""
    rng = np.random.default_rng(seed)
    h, w = 220, 300
    y, x = np.mgrid[:h, :w].astype(np.float32)
    angle = np.abs(np.arctan2(x - w / 2, y + 40))
    radius = np.hypot(x - w / 2, y + 40)
    inside = (angle < 0.75) & (radius > 60) & (radius < 250)
    tissue = cv2.GaussianBlur(rng.uniform(50, 190, (h, w)).astype(np.float32), (3, 3), 0)
    grey = np.where(inside, tissue, 0).astype(np.uint8)
    # Bright tissue against the sector's right edge, just above the detector's bar.
    edge = inside & (angle > 0.68) & (radius > 150) & (radius < 190)
    grey[edge] = rng.integers(228, 233, int(edge.sum()))
    image = np.repeat(grey[..., None], 3, axis=2)
    marks = np.zeros((h, w), np.uint8)
    for target in (image, marks):
        white = (255, 255, 255) if target is image else 255
        cv2.putText(target, "Rt Ovary", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, white, 1)
        cv2.putText(target, "1 D 6.7", (118, 70), cv2.FONT_HERSHEY_SIMPLEX, 0.4, white, 1)
        yellow = (255, 255, 0) if target is image else 255
        cv2.line(target, (140, 120), (160, 120), yellow, 1, cv2.LINE_AA)
        cv2.line(target, (150, 110), (150, 130), yellow, 1, cv2.LINE_AA)
        head = np.array([[200, 150], [216, 158], [200, 166]], np.int32)
        cv2.fillPoly(target, [head], white)
    # A translucent box (0.4 of the light) and an opaque one (0.05), text on each.
    image[150:180, 60:130] = np.rint(image[150:180, 60:130] * 0.4).astype(np.uint8)
    image[100:118, 190:240] = np.rint(image[100:118, 190:240] * 0.05).astype(np.uint8)
    for row in (156, 166):
        image[row : row + 2, 66:124:3] = 255
        marks[row : row + 2, 66:124:3] = 255
    image[106:108, 195:235:3] = 255
    marks[106:108, 195:235:3] = 255
    return image, marks > 0


def phantom_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A phantom annotated by the built-in drawers (mixed marks and colours), frozen
    as PNGs so that improving the drawers does not move the restorer's inputs.

    Drawn at commit dce8dde by ``annotate(make_phantom(180, 240, default_rng(seed),
    color=seed != 2), "mixed", default_rng(seed + 100))``."""
    image = read_image(GOLDEN.parent / f"phantom{seed}.png")
    mask = read_image(GOLDEN.parent / f"phantom{seed}.mask.png") > 0
    return image, mask


def flat_marks_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grey scan, detections, true marks): a flat bright line and a solid arrowhead
    on dark tissue, detected with holes in them (a skipped pixel, a missed core)."""
    rng = np.random.default_rng(5)
    image = rng.integers(30, 80, (120, 160)).astype(np.uint8)
    marks = np.zeros(image.shape, bool)
    marks[40, 10:150] = True
    head = np.zeros(image.shape, np.uint8)
    cv2.fillPoly(head, [np.array([[60, 70], [100, 90], [60, 110]], np.int32)], 1)
    marks |= head.astype(bool)
    image[marks] = 240
    found = marks.copy()
    found[40, 30:150:17] = False  # pixels the detector skipped
    core = cv2.erode(head, np.ones((9, 9), np.uint8)).astype(bool)
    found[core] = False  # the core of the arrowhead
    return image, found, marks


class Halves(nn.Module):
    """A plain residual network (no mask): the output is the input times 0.9."""

    residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.9


class Whole(nn.Module):
    """A plain network that is not residual (the reference autoencoder's kind)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1 - x


def layouts(image: np.ndarray) -> dict[str, np.ndarray]:
    """The scene as RGB, grey, RGBA and 16-bit RGB."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    alpha = np.full(image.shape[:2], 200, np.uint8)
    return {
        "rgb": image,
        "grey": grey,
        "rgba": np.concatenate([image, alpha[..., None]], axis=2),
        "rgb16": image.astype(np.uint16) * 257,
    }


def cases() -> dict[str, Callable[[], list]]:
    """name -> a function giving the restorer's results for that case."""

    def restorer(model: nn.Module, channels: int = 3, **kw) -> Restorer:
        return Restorer(model, channels=channels, device=CPU, amp=False, dilate=1, **kw)

    sector, sector_marks = sector_scene(1)
    out: dict[str, Callable[[], list]] = {}
    for name, image in layouts(sector).items():
        channels = 1 if image.ndim == 2 else 3
        out[f"sector/{name}"] = lambda image=image, c=channels: restorer(
            BrightMarksInTwoStages(), c
        ).restore([image])
    out["sector/tta"] = lambda: restorer(BrightMarksInTwoStages(), tta=True).restore([sector])
    out["sector/tiles"] = lambda: restorer(BrightMarksInTwoStages(), tile=96).restore([sector])
    out["sector/given"] = lambda: restorer(BrightMarksInTwoStages()).inpaint(
        [sector], [sector_marks]
    )
    out["sector/one_stage"] = lambda: restorer(MarksAreBright()).restore([sector])
    out["sector/resized"] = lambda: restorer(MarksAreBright(), size=(96, 128)).restore([sector])
    out["sector/residual"] = lambda: restorer(Halves(), size=(96, 128)).restore([sector])
    out["sector/whole"] = lambda: restorer(Whole(), size=(96, 128)).restore([sector])
    phantoms = [phantom_scene(seed) for seed in (2, 3, 4)]
    out["phantoms/batch"] = lambda: restorer(BrightMarksInTwoStages()).restore(
        [image for image, _ in phantoms]
    )
    out["phantoms/given"] = lambda: restorer(BrightMarksInTwoStages()).inpaint(
        [image for image, _ in phantoms], [mask for _, mask in phantoms]
    )
    flat, found, _ = flat_marks_scene()
    out["flat_marks"] = lambda: restorer(FixedDetections(found), 1).restore([flat])
    return out


def digest(results: list) -> str:
    h = hashlib.sha256()
    for r in results:
        for array in (r.image, r.mask, r.detected):
            if array is not None:
                h.update(f"{array.shape}{array.dtype}".encode())
                h.update(np.ascontiguousarray(array).tobytes())
        h.update(f"{r.changed:.9f}".encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def golden() -> dict[str, str]:
    if os.environ.get("ANNOT_DENOISE_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        found = {name: digest(run()) for name, run in cases().items()}
        GOLDEN.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    return json.loads(GOLDEN.read_text())


def test_every_case_has_a_golden_digest(golden: dict[str, str]) -> None:
    assert sorted(golden) == sorted(cases())


@pytest.mark.parametrize("name", sorted(cases()))
def test_the_restorer_writes_what_it_wrote(golden: dict[str, str], name: str) -> None:
    assert digest(cases()[name]()) == golden[name], (
        f"{name}: the restorer's output changed; if that is meant, regenerate "
        "tests/golden/restorer.json (see this module's docstring) and say why in the commit"
    )


def test_the_scenes_reach_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden cases are only worth their digests if every step changes
    something in them."""
    from annot_denoise.inference import STEPS
    from annot_denoise.inference.postprocess import Step

    fired: set[str] = set()

    def spy(name: str, hook):
        def wrapped(frame, cfg):
            before = _snapshot(frame)
            frame = hook(frame, cfg)
            if not _same(before, _snapshot(frame)):
                fired.add(name)
            return frame

        return wrapped

    for name, step in list(STEPS.items()):
        hooks = {stage: spy(name, hook) for stage, hook in step.hooks.items()}
        monkeypatch.setitem(STEPS, name, Step(hooks, step.config))
    for run in cases().values():
        run()
    assert fired == set(STEPS), sorted(set(STEPS) - fired)


def _snapshot(frame) -> list:
    """What a step may change in a frame, copied."""
    arrays = [frame.net, frame.detected, frame.image, frame.hole, frame.fill]
    return [None if a is None else a.copy() for a in arrays]


def _same(a: list, b: list) -> bool:
    return all(
        (x is None) == (y is None) and (x is None or np.array_equal(x, y)) for x, y in zip(a, b)
    )
