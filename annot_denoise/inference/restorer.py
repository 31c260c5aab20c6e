"""The restorer: prepare -> detect -> refine the mask -> inpaint -> compose -> hand back.

Two ways to run a network, chosen by how it was trained:

- **native** (trained on patches at native scale): the network sees the image at
  its own resolution, in tiles when it is large (:mod:`.execution`).
- **resize** (trained with ``data.size``): the image is resized to that size for
  the network and the result is brought back to the input's size. Residual
  networks have only their *correction* resized back and added to the untouched
  input; the reference autoencoder has its whole output resized, as the thesis did.

Mask-aware networks (``maskunet``) add a fidelity guarantee: the predicted mask is
thresholded and dilated, and every pixel outside it is copied bit for bit from the
input. Two-stage ones run the detector over the whole image, then the inpainter
only on crops around what it found. Between and after, the post-processing
steps of :mod:`.postprocess` run, as the model's ``PostprocessConfig`` lists
them. What comes back always has the input's size, channels, alpha and bit depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from annot_denoise.config import MASK_DILATE
from annot_denoise.inference.execution import Network, bucket, crops, resize, with_plane
from annot_denoise.inference.postprocess import Frame, PostprocessConfig, run_stage
from annot_denoise.inference.postprocess.common import LUMA
from annot_denoise.io import (
    differs,
    from_float,
    merge_alpha,
    split_alpha,
    to_float,
    to_grey,
    to_rgb,
)


@dataclass
class Restored:
    image: np.ndarray  # same size, channels, alpha and dtype as the input
    mask: np.ndarray | None  # bool HxW: where a mask-aware model was allowed to write
    changed: float  # fraction of pixels that differ from the input
    # bool HxW: the thresholded mask before dilation, with what the steps added to
    # it (the rest of a coloured patch, a mark's core, an opaque box under a readout)
    detected: np.ndarray | None = None


class Restorer(Network):
    """A model plus everything needed to apply it to raw image arrays."""

    def __init__(
        self,
        model: nn.Module,
        *,
        channels: int,
        device: torch.device,
        size: Sequence[int] | None = None,
        postprocess: PostprocessConfig | None = None,
        **settings,
    ) -> None:
        """``settings``: those of :class:`.execution.Network` (amp, threshold, dilate,
        tile, batch_size, tta)."""
        super().__init__(model, device=device, **settings)
        self.channels = channels
        self.size = (int(size[0]), int(size[1])) if size else None
        self.postprocess = postprocess or PostprocessConfig()
        self.takes_masks = self.two_stage and self.size is None  # see inpaint()

    @classmethod
    def from_checkpoint(
        cls,
        model: nn.Module,
        ckpt: dict,
        device: torch.device,
        *,
        threshold: float | None = None,
        dilate: int | None = None,
        postprocess: PostprocessConfig | None = None,
        **settings,
    ) -> Restorer:
        """Settings from the checkpoint, each overridable (None = the checkpoint's)."""
        infer = ckpt.get("inference", {})
        stored = infer.get("postprocess")
        return cls(
            model,
            channels=ckpt["data"]["channels"],
            size=ckpt["data"].get("size"),
            device=device,
            threshold=infer.get("mask_threshold", 0.5) if threshold is None else threshold,
            dilate=infer.get("mask_dilate", MASK_DILATE) if dilate is None else dilate,
            postprocess=postprocess
            or (PostprocessConfig.model_validate(stored) if stored is not None else None),
            **settings,
        )

    def restore(self, images: Sequence[np.ndarray]) -> list[Restored]:
        """Clean a batch of images (any sizes, dtypes and channel layouts)."""
        # The networks' own time is theirs (see execution); the rest is the steps
        # and conversions around them.
        with self.stages("postprocess"):
            nets = [self._network_input(img) for img in images]
            if self.size is not None:
                preds = self._predict_resized(nets)
            elif self.two_stage:
                preds = self._predict_two_stage(nets)
            else:
                preds = [self._predict_native(net) for net in nets]
            return [self._finish(img, p) for img, p in zip(images, preds)]

    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[Restored]:
        """Repaint given masks (True = annotation) with the inpainter; no detection.

        What a perfect detector would give (``eval --oracle``), or a way to use
        masks made elsewhere. The holes are the masks grown as at inference
        (``dilate``); every pixel outside them is the input, bit for bit.
        """
        if not self.takes_masks:
            raise ValueError(
                "inpainting given masks needs a mask-aware model at native resolution (maskunet)"
            )
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        for image, mask in zip(images, masks):
            if mask.shape != image.shape[:2]:
                raise ValueError(f"a mask of {mask.shape} for an image of {image.shape[:2]}")
        with self.stages("postprocess"):
            frames = []
            for image, mask in zip(images, masks):
                given = mask.astype(bool)
                frames.append(Frame(net=self._network_input(image), detected=given))
            self._inpaint_around(frames)
            return [self._finish(image, frame) for image, frame in zip(images, frames)]

    # ------------------------------------------------------------------ prediction

    def _network_input(self, image: np.ndarray) -> np.ndarray:
        color, _ = split_alpha(image)
        net = to_float(to_rgb(color) if self.channels == 3 else to_grey(color))
        return net[..., None] if net.ndim == 2 else net

    def _predict_resized(self, nets: list[np.ndarray]) -> list[dict | Frame]:
        preds: list[dict | Frame] = []
        for start in range(0, len(nets), self.batch_size):
            chunk = nets[start : start + self.batch_size]
            small = np.stack([resize(n, self.size) for n in chunk])
            out = self._forward(small)
            for i, net in enumerate(chunk):
                native = net.shape[:2]
                if self.predicts_mask:
                    prob = resize(out["prob"][i][..., None], native)[..., 0]
                    frame = Frame(net=net, detected=prob > self.threshold, prob=prob)
                    frame.fill = net + resize(out["content"][i] - small[i], native)
                    if "hole" in out:
                        frame.hole = resize(out["hole"][i][..., None], native)[..., 0] > 0.5
                    preds.append(frame)
                elif self.residual:
                    preds.append({"output": net + resize(out["output"][i] - small[i], native)})
                else:
                    preds.append({"output": resize(out["output"][i], native)})
        return preds

    def _predict_native(self, net: np.ndarray) -> dict | Frame:
        out = self._with_oom_fallback(lambda tile: self._tiled(net, tile, self._forward))
        if not self.predicts_mask:
            return out
        frame = Frame(net=net, detected=out["prob"] > self.threshold, prob=out["prob"])
        frame.fill = out["content"]
        if "hole" in out:
            frame.hole = out["hole"] > 0.5
        return frame

    def _predict_two_stage(self, nets: list[np.ndarray]) -> list[Frame]:
        """Detect on whole images (same-sized ones batched), refine the detections,
        inpaint around them."""
        probs: list[np.ndarray | None] = [None] * len(nets)
        fits = [i for i, n in enumerate(nets) if max(n.shape[:2]) <= self.tile]
        by_shape: dict[tuple, list[int]] = {}
        for i in fits:
            by_shape.setdefault(nets[i].shape, []).append(i)

        def detect(tile: int, chunk: list[int]) -> list[np.ndarray]:
            if tile == self.tile:  # the whole batch at once
                return list(self._detect(np.stack([nets[i] for i in chunk]))["prob"])
            # After running out of GPU memory: one image at a time, in smaller tiles.
            return [self._tiled(nets[i], tile, self._detect)["prob"] for i in chunk]

        for group in by_shape.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                found = self._with_oom_fallback(lambda tile, chunk=chunk: detect(tile, chunk))
                for i, prob in zip(chunk, found):
                    probs[i] = prob
        frames = []
        for i, net in enumerate(nets):
            prob, probs[i] = probs[i], None
            if prob is None:  # larger than a tile
                prob = self._with_oom_fallback(
                    lambda tile, net=net: self._tiled(net, tile, self._detect)
                )["prob"]
            frame = Frame(net=net, detected=prob > self.threshold, prob=prob)
            frame = run_stage("detection", frame, self.postprocess)
            # The probabilities are for the detection steps; on a large scan they
            # would take a third of the image's memory through the inpainting.
            frame.prob = prob = None
            frames.append(frame)
        self._inpaint_around(frames)
        return frames

    def _inpaint_around(self, frames: Sequence[Frame]) -> None:
        """Inpaint around each frame's detections; sets its fill and hole.

        The crops of all the frames are grown to their size class (:func:`bucket`)
        and each class goes through the inpainter in as few passes as memory
        allows; a crop larger than a tile, or a frame inpainted whole, runs alone,
        in tiles.
        """
        classes: dict[tuple[int, int], list[tuple[Frame, tuple[slice, slice], np.ndarray]]] = {}
        for frame in frames:
            net, detected = frame.net, frame.detected
            frame.fill, frame.hole = net, np.zeros(detected.shape, bool)
            if not detected.any():
                continue
            boxes = crops(detected)
            if len(boxes) == 1 and boxes[0][1].shape == detected.shape and boxes[0][1].all():
                self._inpaint_whole(frame)
                continue
            frame.fill = net.copy()
            for box, own in boxes:
                grown = bucket(box, detected.shape)
                place = placed(own, box, grown)
                if max(place.shape) > self.tile:  # a crop this large is tiled, not grown
                    self._take(frame, box, own, self._paint_large(net[box], detected[box]))
                    continue
                classes.setdefault(place.shape, []).append((frame, grown, place))
        for shape, members in classes.items():
            per_pass = self.crops_per_pass(shape[0] * shape[1])
            for start in range(0, len(members), per_pass):
                chunk = members[start : start + per_pass]
                batch = np.stack([with_plane(f.net[b], f.detected[b]) for f, b, _ in chunk])
                out = self._paint_crops(batch)
                for i, (frame, box, own) in enumerate(chunk):
                    self._take(frame, box, own, {k: v[i] for k, v in out.items()})

    def _paint_crops(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The inpainter on a batch of crops (detection as last channel); after running
        out of GPU memory, crop by crop in smaller tiles."""
        try:
            return self._inpaint(batch)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
        outs = [self._paint_large(c[..., :-1], c[..., -1]) for c in batch]
        return {key: np.stack([o[key] for o in outs]) for key in outs[0]}

    def _paint_large(self, net: np.ndarray, detected: np.ndarray) -> dict[str, np.ndarray]:
        """The inpainter on one crop, in tiles, halved while the GPU runs out of memory."""
        return self._with_oom_fallback(lambda tile: self._tiled(net, tile, self._inpaint, detected))

    def _inpaint_whole(self, frame: Frame) -> None:
        """The inpainter on the whole frame; its fill becomes the content, with the
        input outside the hole (no second copy of a large scan)."""
        painted, fill = self._repaired(frame.net, self._paint_large(frame.net, frame.detected))
        np.copyto(fill, frame.net, where=~painted[..., None])
        frame.fill, frame.hole = fill, painted

    def _take(
        self, frame: Frame, box: tuple[slice, slice], own: np.ndarray, out: dict[str, np.ndarray]
    ) -> None:
        """Write a crop's repair into its frame, in the pixels the crop owns."""
        painted, fill = self._repaired(frame.net[box], out)
        take = own & painted
        frame.fill[box][take] = fill[take]
        frame.hole[box][take] = True

    def _repaired(self, net: np.ndarray, out: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """(hole, fill) of the inpainter's output for ``net``, after the inpainting steps."""
        painted = out["hole"] > 0.5
        crop = Frame(net=net, detected=painted, hole=painted, fill=out["content"])
        return painted, run_stage("inpainting", crop, self.postprocess).fill

    # ------------------------------------------------------------------ writing back

    def _finish(self, image: np.ndarray, pred: dict | Frame) -> Restored:
        color, alpha = split_alpha(image)
        if not self.predicts_mask:
            restored = merge_alpha(to_layout(pred["output"], color), alpha)
            return Restored(restored, None, changed(image, restored))
        frame = pred
        if frame.hole is None:
            kernel = np.ones((2 * self.dilate + 1,) * 2, np.uint8)
            frame.hole = cv2.dilate(frame.detected.view(np.uint8), kernel).astype(bool)
        frame.image = color
        frame = run_stage("composition", frame, self.postprocess)
        restored = merge_alpha(compose(frame), alpha)
        return Restored(restored, frame.hole, changed(image, restored), frame.detected)


def placed(own: np.ndarray, box: tuple[slice, slice], grown: tuple[slice, slice]) -> np.ndarray:
    """``own`` (the pixels of ``box`` a crop owns) within ``grown``, a box around it."""
    (y, x), (gy, gx) = box, grown
    place = np.zeros((gy.stop - gy.start, gx.stop - gx.start), bool)
    place[y.start - gy.start : y.stop - gy.start, x.start - gx.start : x.stop - gx.start] = own
    return place


def compose(frame: Frame) -> np.ndarray:
    """The frame's image with its fill written into its hole (the content head is
    trained to give the clean scan on the marks and around them: see losses)."""
    color, hole = frame.image, frame.hole
    out = color.copy()
    if hole.any():
        values = frame.fill[hole]
        out[hole] = to_layout(values[:, None], color[hole][:, None])[:, 0]
    return out


def to_layout(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Network-layout floats (...xC) -> integers in ``like``'s layout and dtype."""
    if like.ndim == values.ndim - 1 and values.shape[-1] == 3:  # grey file, RGB network
        values = values @ LUMA
    elif like.ndim == values.ndim - 1:  # grey file, grey network
        values = values[..., 0]
    elif values.shape[-1] == 1:  # colour file, grey network
        values = np.repeat(values, like.shape[-1], axis=-1)
    elif like.shape[-1] == 1:  # grey file with a channel axis, RGB network
        values = (values @ LUMA)[..., None]
    return from_float(values, like.dtype)


def changed(a: np.ndarray, b: np.ndarray) -> float:
    return float(differs(a, b).mean())
