"""Where annotations go: the scan's content region, structure edges, corners and margins.

Sonographers put calipers on the boundary of a structure, arrows at it and labels in the
dark margins or a corner. ``content_region`` finds the imaged fan or rectangle; a
``Scene`` holds a small smoothed-gradient map of it so edge points are cheap to sample
even on a 1500x1000 scan. All points are float (x, y) in full-image pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

Point = tuple[float, float]

_REGION_SIDE = 512  # content_region works on at most this many pixels per side
_GRADIENT_SIDE = 192  # the gradient map is this coarse; calipers need no finer


def _small_grey(image: np.ndarray, side: int) -> tuple[np.ndarray, int]:
    """Grey float32 copy in [0, 1], area-downsampled by an integer factor ``k`` so the
    longer side is at most about ``side``; returns (grey, k).

    An integer factor takes OpenCV's fast block-averaging path (4x faster than a
    fractional INTER_AREA on a 1500x1000 scan); the few rows and columns past the last
    whole block are dropped.
    """
    h, w = image.shape[:2]
    img = image if image.ndim == 2 else image[..., 0 if image.shape[2] <= 2 else slice(0, 3)]
    k = max(1, -(-max(h, w) // side))
    if k > 1:
        sh, sw = max(1, h // k), max(1, w // k)
        block = np.ascontiguousarray(img[: max(sh * k, min(h, k)), : max(sw * k, min(w, k))])
        img = cv2.resize(block, (sw, sh), interpolation=cv2.INTER_AREA)
    grey = img.astype(np.float32)
    if grey.ndim == 3:
        grey = grey @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if image.dtype == np.uint8:
        grey /= 255.0
    elif image.dtype == np.uint16:
        grey /= 65535.0
    return grey, k


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background area not connected to the border set to 1, so dark
    cysts and shadows inside the fan count as content."""
    padded = np.pad(1 - mask, 1, constant_values=1).astype(np.uint8)
    cv2.floodFill(padded, None, (0, 0), 2)
    filled = mask.copy()
    filled[padded[1:-1, 1:-1] == 1] = 1
    return filled


def content_region(image: np.ndarray) -> np.ndarray:
    """Boolean HxW mask of the imaged content: the non-black fan or rectangle.

    Thresholds the near-black pixels of a downsampled grey copy, closes speckle gaps,
    opens away thin marks, keeps the largest component(s) and fills their holes. Returns the
    whole image when nothing is found (an all-black scan).
    """
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=bool)
    grey, _ = _small_grey(image, _REGION_SIDE)
    top = float(np.percentile(grey[::4, ::4], 99))
    # Relative threshold: 12-bit data in a uint16 container is as dark as 8-bit black.
    fg = (grey > max(0.035 * top, 1e-6)).astype(np.uint8) if top > 0 else None
    if fg is None or not fg.any():
        return np.ones((h, w), dtype=bool)
    r = max(1, round(min(grey.shape) * 0.012))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return np.ones((h, w), dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    # Dual-view screens show two fans side by side; keep every component close in size.
    keep = 1 + np.flatnonzero(areas >= 0.25 * areas.max())
    region = _fill_holes(np.isin(labels, keep).astype(np.uint8))
    if region.shape != (h, w):
        region = cv2.resize(region, (w, h), interpolation=cv2.INTER_NEAREST)
    return region.astype(bool)


def random_point_in(region: np.ndarray, rng: np.random.Generator) -> Point:
    """A uniformly random point inside ``region`` (anywhere in the image when it is empty)."""
    h, w = region.shape
    idx = np.flatnonzero(region)
    if idx.size == 0:
        return float(rng.uniform(0, w)), float(rng.uniform(0, h))
    i = int(idx[rng.integers(idx.size)])
    return float(i % w + rng.random()), float(i // w + rng.random())


def edge_points(
    image: np.ndarray, rng: np.random.Generator, n: int, region: np.ndarray | None = None
) -> list[Point]:
    """``n`` points on structure boundaries (high smoothed gradient inside the content)."""
    scene = Scene.from_image(image, region)
    return [scene.edge_point(rng) for _ in range(n)]


def box_around(a: np.ndarray, x: float, y: float, w: float, h: float) -> np.ndarray:
    """The part of ``a`` (HxW) under the box (x, y, w, h) and a pixel around it."""
    x0, y0 = max(0, int(x) - 1), max(0, int(y) - 1)
    return a[y0 : int(y + h) + 2, x0 : int(x + w) + 2]


def region_bbox(region: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) bounds of ``region``, exclusive on the right; the image if empty."""
    x, y, w, h = cv2.boundingRect(region.astype(np.uint8))
    if w == 0 or h == 0:
        return 0, 0, region.shape[1], region.shape[0]
    return x, y, x + w, y + h


def _lesion_saliency(grey: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """How much each place looks like a dark lesion: darker than its surroundings at two
    scales (centre-surround) and darker than the typical tissue, so broad shadows and
    the dark depths of the fan score low while cysts and masses stand out."""
    blob = cv2.GaussianBlur(grey, (0, 0), 2.0)
    contrast = np.zeros_like(grey)
    for sigma in (6.0, 14.0):
        surround = cv2.GaussianBlur(grey, (0, 0), sigma)
        contrast = np.maximum(contrast, (surround - blob) / (surround + 0.05))
    level = float(np.median(blob[inner])) if inner.any() else 0.0
    dark = np.clip(1.0 - blob / max(level, 1e-6), 0, 1)
    return (np.clip(contrast, 0, 1) ** 2 * dark) ** 2


def _outline(
    image: np.ndarray, region: np.ndarray | None, avoid: np.ndarray | None
) -> tuple[int, int, np.ndarray, np.ndarray | None]:
    """(height, width, region, avoid) checked against ``image``; the region computed
    when None, the whole image when empty; an empty ``avoid`` becomes None."""
    h, w = image.shape[:2]
    if avoid is not None:
        avoid = np.asarray(avoid, dtype=bool)
        if avoid.shape != (h, w):
            raise ValueError(f"avoid shape {avoid.shape} does not match image {(h, w)}")
        avoid = avoid if avoid.any() else None
    if region is None:
        region = content_region(image)
    region = np.asarray(region, dtype=bool)
    if region.shape != (h, w):
        raise ValueError(f"region shape {region.shape} does not match image {(h, w)}")
    if not region.any():
        region = np.ones((h, w), dtype=bool)
    return h, w, region, avoid


@dataclass
class Outline:
    """Where an image's content lies, and what boxes in its corners and margins keep
    off. The scanner's interface, which keeps to the rim of the field of view and the
    screen's edges, needs no more; ``Scene`` adds the maps the clinician's marks need."""

    height: int
    width: int
    region: np.ndarray  # bool HxW, full resolution
    # bool HxW, full resolution, or None: what the scanner drew. Readouts, labels, side
    # letters and body markers keep off it, since a scanner never prints over its own text.
    avoid: np.ndarray | None

    @classmethod
    def from_image(
        cls, image: np.ndarray, region: np.ndarray | None = None, avoid: np.ndarray | None = None
    ) -> Outline:
        return cls(*_outline(image, region, avoid))

    @property
    def scale(self) -> float:
        """Size factor for marks: 1.0 for a 500-px scan (shorter side)."""
        return min(self.height, self.width) / 500.0

    @cached_property
    def bbox(self) -> tuple[int, int, int, int]:
        return region_bbox(self.region)

    def clip(self, p: Point, margin: float = 0.0) -> Point:
        """``p`` moved inside the image, ``margin`` px from its border where room allows."""
        mx = min(margin, (self.width - 1) / 2)
        my = min(margin, (self.height - 1) / 2)
        x = float(np.clip(p[0], mx, max(mx, self.width - 1 - mx)))
        y = float(np.clip(p[1], my, max(my, self.height - 1 - my)))
        return x, y

    def overlap(self, x: float, y: float, w: float, h: float) -> int:
        """How many ``avoid`` pixels lie in the box (x, y, w, h) or a pixel around it."""
        if self.avoid is None:
            return 0
        return int(np.count_nonzero(box_around(self.avoid, x, y, w, h)))

    def corner_box(
        self, rng: np.random.Generator, w: float, h: float, margin: float
    ) -> tuple[float, float, str]:
        """Top-left corner for a ``w`` x ``h`` box in a corner of the image or of the content.

        Measurement readouts sit in a screen corner, or just inside the corner of the
        imaged area when the scan fills the screen. A box over ``avoid`` is drawn again,
        up to 8 times, and the least covering draw wins; without ``avoid`` the first
        draw stands.
        Returns (x, y, corner name).
        """
        best = self._corner_box(rng, w, h, margin)
        cost = self.overlap(best[0], best[1], w, h)
        for _ in range(8):
            if cost == 0:
                break
            box = self._corner_box(rng, w, h, margin)
            if (box_cost := self.overlap(box[0], box[1], w, h)) < cost:
                best, cost = box, box_cost
        return best

    def _corner_box(
        self, rng: np.random.Generator, w: float, h: float, margin: float
    ) -> tuple[float, float, str]:
        corner = ("top-left", "top-right", "bottom-left", "bottom-right")[int(rng.integers(4))]
        if rng.random() < 0.5:
            x0, y0, x1, y1 = 0, 0, self.width, self.height
        else:
            x0, y0, x1, y1 = self.bbox
        m = margin * rng.uniform(0.5, 1.5)
        x = x0 + m if "left" in corner else x1 - m - w
        y = y0 + m if "top" in corner else y1 - m - h
        x = float(np.clip(x, 0, max(0.0, self.width - w)))
        y = float(np.clip(y, 0, max(0.0, self.height - h)))
        return x, y, corner

    def margin_box(self, rng: np.random.Generator, w: float, h: float) -> tuple[float, float]:
        """Top-left corner for a box that overlaps the content as little as possible, and
        ``avoid`` not at all where it can."""
        best, best_cost = (0.0, 0.0), np.inf
        for _ in range(12):
            x = rng.uniform(0, max(0.0, self.width - w))
            y = rng.uniform(0, max(0.0, self.height - h))
            x0, y0 = int(x), int(y)
            window = self.region[y0 : y0 + max(1, int(h)), x0 : x0 + max(1, int(w))]
            cost = float(window.mean()) if window.size else 1.0
            # Over the scanner's own text is worse than over any content.
            cost += 1.0 if self.overlap(x, y, w, h) else 0.0
            if cost < best_cost:
                best, best_cost = (float(x), float(y)), cost
        return best


@dataclass
class Scene(Outline):
    """Placement context for one image: its region plus a coarse gradient map of it."""

    inner: np.ndarray  # bool, coarse: the region eroded away from its own rim
    grad: np.ndarray  # float32, coarse: smoothed gradient magnitude, 0 outside ``inner``
    dark: np.ndarray  # float32, coarse: how dark (lesion-like) each place is inside ``inner``
    gx: np.ndarray  # float32, coarse: smoothed x and y derivatives, for edge normals
    gy: np.ndarray
    fx: float  # coarse / full scale, x
    fy: float  # coarse / full scale, y

    @classmethod
    def from_image(
        cls, image: np.ndarray, region: np.ndarray | None = None, avoid: np.ndarray | None = None
    ) -> Scene:
        h, w, region, avoid = _outline(image, region, avoid)
        grey, k = _small_grey(image, _GRADIENT_SIDE)
        sh, sw = grey.shape
        small = cv2.resize(region.view(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST)
        r = max(1, round(min(sh, sw) * 0.04))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        inner = cv2.erode(small, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
        if not inner.any():
            inner = small > 0 if small.any() else np.ones_like(small, dtype=bool)
        smooth = cv2.GaussianBlur(grey, (0, 0), 1.2)
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
        grad = np.where(inner, np.hypot(gx, gy), 0).astype(np.float32)
        dark = np.where(inner, _lesion_saliency(grey, inner), 0)
        return cls(h, w, region, avoid, inner, grad, dark.astype(np.float32), gx, gy, 1 / k, 1 / k)

    def _to_full(self, i: int, rng: np.random.Generator) -> Point:
        sw = self.inner.shape[1]
        x = (i % sw + rng.random()) / self.fx
        y = (i // sw + rng.random()) / self.fy
        return min(x, self.width - 0.5), min(y, self.height - 0.5)

    def _weighted(self, weights: np.ndarray, rng: np.random.Generator) -> Point:
        cum = np.cumsum(weights.ravel(), dtype=np.float64)
        if cum[-1] <= 0:
            return self.random_point(rng)
        i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        return self._to_full(min(i, cum.size - 1), rng)

    def random_point(self, rng: np.random.Generator) -> Point:
        """A uniform point well inside the content (away from the fan's rim)."""
        idx = np.flatnonzero(self.inner)
        return self._to_full(int(idx[rng.integers(idx.size)]), rng)

    def edge_point(self, rng: np.random.Generator) -> Point:
        """A point on a structure boundary: drawn with probability ~ gradient squared."""
        return self._weighted(self.grad**2, rng)

    def normal_at(self, p: Point) -> float:
        """Direction (radians) from the brighter to the darker side of the edge at ``p``."""
        sh, sw = self.gx.shape
        i = min(max(int(p[1] * self.fy), 0), sh - 1)
        j = min(max(int(p[0] * self.fx), 0), sw - 1)
        return float(np.arctan2(-self.gy[i, j] * self.fy, -self.gx[i, j] * self.fx))

    def dark_point(self, rng: np.random.Generator) -> Point:
        """A point inside a dark (hypoechoic, lesion-like) area of the content."""
        return self._weighted(self.dark, rng)

    def inside(self, p: Point) -> bool:
        """Whether ``p`` lies in the inner content area."""
        sh, sw = self.inner.shape
        i, j = int(p[1] * self.fy), int(p[0] * self.fx)
        return 0 <= i < sh and 0 <= j < sw and bool(self.inner[i, j])

    def edge_along(
        self, p: Point, angle: float, rmin: float, rmax: float, rng: np.random.Generator
    ) -> Point:
        """The strongest edge on the ray from ``p`` at ``angle`` between ``rmin`` and ``rmax``.

        The ray stops where it leaves the inner content; with no room beyond ``rmin`` the
        last point still inside is returned (``p`` itself at worst).
        """
        sh, sw = self.inner.shape
        r = np.linspace(0.0, rmax, 64)
        xs, ys = p[0] + r * np.cos(angle), p[1] + r * np.sin(angle)
        js, is_ = (xs * self.fx).astype(int), (ys * self.fy).astype(int)
        ok = (js >= 0) & (js < sw) & (is_ >= 0) & (is_ < sh)
        ok &= self.inner[np.clip(is_, 0, sh - 1), np.clip(js, 0, sw - 1)]
        stop = int(np.argmin(ok)) if not ok.all() else r.size
        first = int(np.searchsorted(r, rmin))
        if stop > first:
            g = self.grad[is_[first:stop], js[first:stop]]
            # A little noise so repeated calls on one scan do not pick the same pixel.
            k = first + int(np.argmax(g * rng.uniform(0.8, 1.0, stop - first)))
            return float(xs[k]), float(ys[k])
        k = max(stop - 1, 0)
        return self.clip((float(xs[k]), float(ys[k])))
