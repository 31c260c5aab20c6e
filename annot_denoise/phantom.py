"""Procedural, seeded ultrasound-like B-mode scans: the project's embedded default data.

Nothing is ever downloaded: the demo, the tests and the benchmarks take their clean
scans from here, and synthetic annotations are burned on top of them later. A scan is
simulated in probe coordinates (rows = depth, columns = beam lines), so shadows and
enhancement run along the beams, and then mapped onto a sector (fan) or linear field of
view. Every pixel outside the field of view is exactly 0, unless vendor text is drawn
there. The same generator state always gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np

from annot_denoise.io import folder_problem, write_image
from annot_denoise.synth.pipeline import SynthError

# Tissue is simulated on a grid of at most this many pixels, then remapped to the output:
# large images stay fast, and structure and speckle grains scale with the image.
_MAX_WORK_PIXELS = 360_000
_PROBES = {"sector": ["C5-1", "C5-2", "P4-2", "C6-2"], "linear": ["L12-5", "L18-4", "L14-5"]}


class FieldOfView(NamedTuple):
    """Where the scan lies: ``mask`` (bool HxW); probe coordinates ``depth`` and ``lateral``
    of every pixel (float32 HxW, 0..1 inside the mask); ``extent``, the (depth, lateral)
    size of the field of view in output pixels."""

    mask: np.ndarray
    depth: np.ndarray
    lateral: np.ndarray
    extent: tuple[float, float]


def field_of_view(
    height: int,
    width: int,
    geometry: Literal["sector", "linear"],
    rng: np.random.Generator,
    *,
    reserve_margin: bool = False,
) -> FieldOfView:
    """Draw a sector or linear field of view; ``reserve_margin`` leaves room for text."""
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    if geometry == "sector":
        half = np.deg2rad(rng.uniform(30.0, 45.0))
        side = width * (rng.uniform(0.06, 0.1) if reserve_margin else rng.uniform(0.0, 0.04))
        cx = (width - 1) / 2
        # Capping the apex height keeps both top corners outside the angular span.
        apex = -min(rng.uniform(0.0, 0.3) * height, 0.9 * cx / np.tan(half))
        r0 = -apex + rng.uniform(0.0, 0.02) * min(height, width)
        r1 = min(height - 1 - apex - rng.uniform(0.0, 0.03) * height, (cx - side) / np.sin(half))
        r1 = max(r1, r0 + 2.0)
        dx, dy = x - cx, y - apex
        depth = (np.sqrt(dx * dx + dy * dy) - r0) / (r1 - r0)
        lateral = (np.arctan2(dx, dy) + half) / (2 * half)
        extent = (r1 - r0, half * (r0 + r1))
    elif geometry == "linear":
        top = height * (rng.uniform(0.08, 0.12) if reserve_margin else rng.uniform(0.0, 0.05))
        side = width * (rng.uniform(0.06, 0.12) if reserve_margin else rng.uniform(-0.06, 0.1))
        side = round(max(side, 0.0))  # about half of all linear scans fill the full width
        top, bottom = round(top), height - round(rng.uniform(0.0, 0.04) * height)
        depth = (y - top) / max(bottom - 1 - top, 1)
        lateral = (x - side) / max(width - 1 - 2 * side, 1)
        depth, lateral = np.broadcast_arrays(depth, lateral)
        extent = (float(bottom - top), float(width - 2 * side))
    else:
        raise ValueError(f"unknown geometry {geometry!r}; choose 'linear' or 'sector'")
    mask = (depth >= 0) & (depth <= 1) & (lateral >= 0) & (lateral <= 1)
    return FieldOfView(mask, depth.astype(np.float32), lateral.astype(np.float32), extent)


def make_phantom(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    geometry: Literal["sector", "linear", "auto"] = "auto",
    color: bool = False,
    vendor_text: bool = False,
    gain: float | None = None,
) -> np.ndarray:
    """Return an ultrasound-like scan: uint8 HxW, or HxWx3 RGB when ``color`` is set.

    ``vendor_text`` widens the margins to make room for text, so the same generator
    state gives a different scan with and without it.
    """
    if geometry not in ("sector", "linear", "auto"):
        raise ValueError(f"unknown geometry {geometry!r}; choose 'auto', 'linear' or 'sector'")
    if geometry == "auto":
        geometry = "sector" if rng.random() < 0.5 else "linear"
    if gain is None:
        gain = rng.uniform(0.75, 1.25)
    fov = field_of_view(height, width, geometry, rng, reserve_margin=vendor_text)
    scale = min(1.0, float(np.sqrt(_MAX_WORK_PIXELS / (fov.extent[0] * fov.extent[1]))))
    work = (max(8, round(fov.extent[0] * scale)), max(8, round(fov.extent[1] * scale)))
    # Grains grow with the field of view's depth (sub-linearly: big scans are also finer).
    axial = max(0.45, 0.9 * (fov.extent[0] / 256) ** 0.75 * scale * rng.uniform(0.8, 1.25))
    lateral = axial * rng.uniform(2.0, 3.2)
    scan = _compress(_speckle(_tissue(work, rng), rng, axial, lateral), rng, axial, lateral)
    map_y, map_x = fov.depth * (work[0] - 1), fov.lateral * (work[1] - 1)
    image = cv2.remap(scan, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    image = np.where(fov.mask, np.clip(image * (255.0 * gain), 0.0, 255.0), 0.0)
    if color:
        image = image[..., None] * _tint(rng)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if vendor_text:
        _draw_vendor_text(image, fov.mask, geometry, rng)
    return image


def write_phantoms(
    out_dir: Path,
    count: int,
    *,
    seed: int = 0,
    size: tuple[int, int] = (336, 544),
    geometry: Literal["sector", "linear", "auto"] = "auto",
    color: bool = False,
    vendor_text: bool = False,
    varied: bool = False,
    workers: int = 0,
) -> list[Path]:
    """Write ``phantom_0000.png`` ... (``size`` is height, width) under ``out_dir``.

    Image i comes from ``SeedSequence([seed, i])``, so it is the same whatever ``count``
    or ``workers`` (processes; 0 or 1 = this one). ``varied`` ignores ``size`` and
    ``color``: each scan gets its own size (240 to 1200 px a side, portrait to wide),
    and a third of them are RGB, for training sets that must cover what scanners produce.
    Raises :class:`SynthError` naming the path when ``out_dir`` cannot be written.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    jobs = [
        (
            out_dir / f"phantom_{i:04d}.png",
            seed,
            i,
            size,
            geometry,
            color,
            vendor_text,
            varied,
        )
        for i in range(count)
    ]
    try:
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                return list(pool.map(_write_one, jobs, chunksize=8))
        return [_write_one(job) for job in jobs]
    except OSError as exc:  # a full disk, a folder made read-only meanwhile
        where = exc.filename or out_dir
        raise SynthError(f"{where}: cannot write a phantom scan ({exc.strerror or exc})") from None


def _check_out_dir(out_dir: Path) -> None:
    """Refuse, before writing anything, a folder that is a file or lies under one."""
    if why := folder_problem(out_dir):
        raise SynthError(f"{out_dir}: {why}")


def _write_one(job: tuple) -> Path:
    path, seed, i, size, geometry, color, vendor_text, varied = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
    h, w, rgb = size[0], size[1], color
    if varied:
        h = int(rng.integers(240, 1001))
        w = int(np.clip(h * rng.uniform(0.8, 1.8), 240, 1200))
        rgb = bool(rng.random() < 1 / 3)
    image = make_phantom(h, w, rng, geometry=geometry, color=rgb, vendor_text=vendor_text)
    write_image(path, image)
    return path


def _smooth_noise(
    shape: tuple[int, int], rng: np.random.Generator, sigma: tuple[float, float]
) -> np.ndarray:
    """Unit-variance noise blurred by ``sigma`` (rows, cols), made cheaply at low resolution."""
    factors = [max(1.0, s / 2.0) for s in sigma]
    small = [max(4, int(np.ceil(n / f)) + 1) for n, f in zip(shape, factors, strict=True)]
    noise = rng.standard_normal(small, dtype=np.float32)
    noise = cv2.GaussianBlur(
        noise, (0, 0), sigmaX=sigma[1] / factors[1], sigmaY=sigma[0] / factors[0]
    )
    noise = cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _tissue(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Echo amplitude in probe coordinates: layers, ligaments, fat lobules and lesions."""
    h, w = shape
    d = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    u = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    # Skin, subcutaneous fat, glandular tissue, muscle, chest wall: a breast-like stack,
    # each layer with its echo level (dB), its share of fat lobules and of fibrous streaks.
    bounds = np.cumsum(rng.uniform([0.015, 0.08, 0.25, 0.08], [0.05, 0.3, 0.5, 0.2])).tolist()
    level_db = rng.uniform([6, -14, -3, -10, -22], [12, -6, 3, -4, -12]).tolist()
    lobular = (np.array([0.0, 0.7, 0.9, 0.0, 0.2]) * rng.uniform(0.4, 1.0)).tolist()
    fibrous = [0.0, 0.4, 1.0, 0.7, 0.3]
    layers = [np.full(shape, v, np.float32) for v in (level_db[0], lobular[0], fibrous[0])]
    fascia = np.zeros(shape, np.float32)
    for k, b in enumerate(bounds):
        edge = 1.5 / h + rng.uniform(0.002, 0.02)
        wave = _smooth_noise((1, w), rng, (1.0, rng.uniform(0.05, 0.2) * w))
        dist = d - b - rng.uniform(0.005, 0.04) * wave
        step = _sigmoid(dist / edge)
        for layer, values in zip(layers, (level_db, lobular, fibrous), strict=True):
            layer += (values[k + 1] - values[k]) * step
        # Fascia between layers are bright specular lines, broken up along their length.
        broken = np.clip(0.5 + 0.6 * _smooth_noise((1, w), rng, (1.0, 0.05 * w)), 0, 1.5)
        fascia += rng.uniform(0.5, 1.0) * broken * np.exp(-((dist * h / 1.5) ** 2))
    db, lobular_w, fibrous_w = layers
    # Fat lobules are the blobs of a smooth random field and their rims its level lines.
    lobe = _smooth_noise(shape, rng, (0.025 * h, 0.045 * w)) - rng.uniform(0.0, 0.6)
    db += lobular_w * (-16 * _sigmoid(lobe / 0.15) + 10 * np.exp(-((lobe / 0.1) ** 2)))
    broken = np.clip(0.7 + 0.5 * _smooth_noise(shape, rng, (0.02 * h, 0.06 * w)), 0.1, 1.2)
    db += rng.uniform(12, 18) * fibrous_w * broken * _fibres(shape, rng)
    db += 12 * fascia + 3 * _smooth_noise(shape, rng, (0.01 * h, 0.03 * w))
    amp = 10 ** (db / 20)
    # Tissue planes undulate together: bend everything along a smooth depth displacement.
    bend = _smooth_noise(shape, rng, (0.2 * h, 0.12 * w)) * (rng.uniform(0.01, 0.04) * h)
    rows = np.arange(h, dtype=np.float32)[:, None] + bend
    cols = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :], shape)
    amp = cv2.remap(
        amp, np.ascontiguousarray(cols), rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    for _ in range(rng.choice(4, p=[0.35, 0.35, 0.2, 0.1])):
        _add_lesion(amp, rng, cyst=True, top=float(bounds[0]))
    for _ in range(rng.choice(3, p=[0.45, 0.4, 0.15])):
        _add_lesion(amp, rng, cyst=False, top=float(bounds[0]))
    # Refraction at ligament edges casts soft shadows down a few beam lines.
    for _ in range(rng.choice(3, p=[0.5, 0.35, 0.15])):
        beam = np.exp(-(((u - rng.uniform()) / rng.uniform(0.01, 0.05)) ** 2))
        start = _sigmoid((d - rng.uniform(0.1, 0.6)) / 0.03)
        amp *= 1 - rng.uniform(0.3, 0.6) * beam * start
    return amp


def _fibres(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Long, thin, nearly horizontal bright curves: ligaments and fibrous strands."""
    h, w = shape
    layer = np.zeros(shape, np.float32)
    thickness = max(1, round(h / 200))
    for _ in range(rng.integers(30, 70)):
        x = rng.uniform(-0.1, 0.9) * w + np.linspace(0, rng.uniform(0.15, 0.8) * w, 12)
        y = rng.uniform(0, h) + rng.normal(0, 0.06) * (x - x[0])
        y += np.cumsum(rng.normal(0, 0.006 * h, x.size))
        points = np.round(np.stack([x, y], axis=1) * 16).astype(np.int32)  # 4 fraction bits
        cv2.polylines(
            layer, [points], False, rng.uniform(0.4, 1.0), thickness, cv2.LINE_AA, shift=4
        )
    return layer


def _add_lesion(amp: np.ndarray, rng: np.random.Generator, *, cyst: bool, top: float) -> None:
    """Cysts: anechoic, smooth, enhancement below. Solids: irregular, shadow below. In place."""
    h, w = amp.shape
    ry = rng.uniform(0.04, 0.13) * h
    rx = min(ry * rng.uniform(1.0, 2.2) if cyst else ry * rng.uniform(0.7, 1.6), 0.3 * w)
    cy, cx = rng.uniform(top * h + ry, max(0.8 * h, top * h + ry + 1)), rng.uniform(0.1, 0.9) * w
    blur = 0.08 * rx + 0.5
    # Only a box around the lesion and the beams below it can change.
    y0, y1 = max(0, int(cy - 1.6 * ry)), min(h, int(cy + 1.6 * ry) + 2)
    x0, x1 = max(0, int(cx - 1.6 * rx - 3 * blur)), min(w, int(cx + 1.6 * rx + 3 * blur) + 2)
    dy = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / ry
    dx = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / rx
    theta = np.arctan2(dy, dx)
    harmonics = np.arange(2, 5 if cyst else 14)
    coef = rng.normal(0.0, 0.05 if cyst else 0.16, harmonics.size) / harmonics**0.7
    phase = rng.uniform(0, 2 * np.pi, harmonics.size)
    radius = np.ones_like(theta)
    for k, a, p in zip(harmonics, coef, phase, strict=True):
        radius += float(a) * np.cos(k * theta + float(p))
    edge_px = rng.uniform(0.6, 1.2) if cyst else rng.uniform(1.5, 3.5)
    box = _sigmoid((np.clip(radius, 0.4, 1.5) - np.sqrt(dx * dx + dy * dy)) * (ry / edge_px))
    inside = np.zeros((h - y0, x1 - x0), np.float32)
    inside[: y1 - y0] = box
    # Path length through the lesion along each beam, in lesion radii (about 2 below it).
    path = cv2.GaussianBlur(np.cumsum(inside, axis=0) / ry, (0, 0), sigmaX=blur)
    region = amp[y0:, x0:x1]
    if cyst:
        region *= 1 - inside
        region += rng.uniform(0.01, 0.04) * inside
        region *= 1 + rng.uniform(0.6, 1.5) * np.clip(path / 2, 0, 1)
        return
    level = rng.uniform(0.1, 0.35) if rng.random() < 0.8 else rng.uniform(1.4, 2.0)
    texture = np.exp(0.3 * _smooth_noise(region.shape, rng, (0.15 * ry, 0.15 * rx)))
    region *= 1 - inside
    region += level * texture * inside
    region *= np.exp(np.log(rng.uniform(0.12, 0.5)) / 2 * np.clip(path, 0, 2.5))


def _speckle(amp: np.ndarray, rng: np.random.Generator, axial: float, lateral: float) -> np.ndarray:
    """Envelope of point scatterers of strength ``amp`` seen through a Gaussian beam.

    Scanners compound a few looks (steering angles, frequencies), which averages the
    speckle power of 2-4 independent realisations and makes it less grainy.
    """
    ksize = (2 * int(np.ceil(3 * lateral)) + 1, 2 * int(np.ceil(3 * axial)) + 1)
    kx, ky = cv2.getGaussianKernel(ksize[0], lateral), cv2.getGaussianKernel(ksize[1], axial)
    gain = float((kx**2).sum() * (ky**2).sum())  # so unit amplitude has unit mean power
    looks = int(rng.integers(2, 5))
    power = np.zeros(amp.shape, np.float32)
    for _ in range(2 * looks):  # in-phase and quadrature parts: Rayleigh-distributed grains
        scatter = rng.standard_normal(amp.shape, dtype=np.float32) * amp
        power += cv2.GaussianBlur(scatter, ksize, sigmaX=lateral, sigmaY=axial) ** 2
    return np.sqrt(power / (2 * looks * gain))


def _compress(
    envelope: np.ndarray, rng: np.random.Generator, axial: float, lateral: float
) -> np.ndarray:
    """Time-gain compensation, log compression, speckle smoothing and a grey map: 0..1."""
    d = np.linspace(0.0, 1.0, envelope.shape[0], dtype=np.float32)
    dynamic_range, ceiling = rng.uniform(50, 65), rng.uniform(15, 22)
    # Attenuation the TGC sliders did not quite make up for: darker with depth.
    tgc = np.interp(d, np.linspace(0, 1, 5), rng.uniform(-3, 3, 5)) - rng.uniform(4, 16) * d
    power = envelope**2 * (10 ** (tgc / 10)).astype(np.float32)[:, None]
    # Electronic noise after the TGC keeps cysts and shadows just above black, as on a scanner.
    floor = 10 ** ((ceiling - dynamic_range + rng.uniform(4, 8)) / 10)
    db = 10 * np.log10(power + floor)
    # Scanners smooth the log image a little, which fills the speckle's dark holes.
    strength = rng.uniform(0.2, 0.6)
    db = cv2.GaussianBlur(db, (0, 0), sigmaX=strength * lateral, sigmaY=strength * axial)
    scan = np.clip((db - ceiling + dynamic_range) / dynamic_range, 0, 1)
    return (scan ** rng.uniform(1.1, 1.6)).astype(np.float32)


def _tint(rng: np.random.Generator) -> np.ndarray:
    """Per-channel RGB gain: mostly neutral, sometimes a scanner's sepia or blue tint."""
    if rng.random() >= 0.3:
        return np.ones(3, np.float32)
    sepia, t = rng.random() < 0.5, rng.uniform(0.04, 0.12)
    return np.array([1, 1 - t, 1 - 2.5 * t] if sepia else [1 - 2 * t, 1 - t, 1], np.float32)


def _draw_vendor_text(
    image: np.ndarray, mask: np.ndarray, geometry: str, rng: np.random.Generator
) -> None:
    """Scanner read-outs in the top corners and a depth scale, drawn only outside the mask."""
    h, w = mask.shape
    layer = np.zeros((h, w), np.uint8)
    level = int(rng.integers(150, 230))
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.3, min(h, w) / 900)
    thick, step = max(1, round(scale * 1.3)), max(6, round(30 * scale))
    probe = rng.choice(_PROBES[geometry])
    depth_cm = rng.uniform(8, 20) if geometry == "sector" else rng.uniform(2.5, 6)
    mi, tis, fps = rng.uniform(0.4, 1.4), rng.uniform(0.1, 1.0), rng.integers(12, 60)
    left = [f"{probe}  {fps}Hz", f"MI {mi:.1f}  TIS {tis:.1f}", f"D {depth_cm:.1f}cm"]
    g, dr, mhz = rng.integers(30, 80), rng.integers(45, 75), rng.uniform(2, 15)
    right = [f"G {g}%", f"DR {dr}", f"{mhz:.1f}MHz"]
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        y = step * (i + 1)
        cv2.putText(layer, a, (max(2, w // 60), y), font, scale, level, thick, cv2.LINE_AA)
        tw = cv2.getTextSize(b, font, scale, thick)[0][0]
        cv2.putText(layer, b, (w - tw - max(2, w // 60), y), font, scale, level, thick, cv2.LINE_AA)
    rows = np.flatnonzero(mask[:, w // 2])
    if rows.size > 1:
        x1, tick = w - 1 - max(2, w // 70), max(2, w // 80)
        for k in range(int(depth_cm) + 1):
            y = round(rows[0] + k / depth_cm * (rows[-1] - rows[0]))
            cv2.line(layer, (x1 - tick * (2 if k % 5 == 0 else 1), y), (x1, y), level, thick)
    outside = ~mask if image.ndim == 2 else ~mask[..., None]
    text = layer if image.ndim == 2 else layer[..., None]
    np.copyto(image, np.broadcast_to(text, image.shape), where=outside & (text > 0))
