"""Paired datasets: annotated scans and their clean originals, matched by name.

A dataset folder holds ``clean/``, ``annotated/`` and optionally ``masks/`` with
identical relative file names (what ``synth`` writes). The annotation mask comes
from ``masks/`` when present, else from the pixels where annotated != clean.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from annot_denoise.io import (
    ImageReadError,
    differs,
    image_header,
    image_size,
    list_images,
    read_frames,
    read_image,
    split_alpha,
    to_float,
    to_grey,
    to_rgb,
)
from annot_denoise.runtime import StageTimes
from annot_denoise.training.augment import augment_scan, crop, crop_box, window, window_at

log = logging.getLogger(__name__)


class DatasetError(Exception):
    """A dataset folder the user must fix before anything can run."""


@dataclass(frozen=True)
class Pair:
    name: str  # relative POSIX path, identical under clean/, annotated/ and masks/
    clean: Path
    annotated: Path
    mask: Path | None
    group: str  # scans from one source share a group, so a split never separates them


def find_pairs(root: Path) -> list[Pair]:
    """Match ``root/clean`` and ``root/annotated`` by relative name; raise on any mismatch."""
    root = Path(root)
    if not root.is_dir():
        found = "is a file, not a dataset folder" if root.exists() else "dataset folder not found"
        raise DatasetError(f"{root}: {found}")
    for sub in ("clean", "annotated"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root}: no {sub}/ folder (expected clean/ and annotated/)")
    names = {}
    for sub in ("clean", "annotated"):
        folder = root / sub
        names[sub] = {p.relative_to(folder).as_posix() for p in list_images(folder)}
        if not names[sub]:
            raise DatasetError(f"{folder}: no images found")
    only_clean = sorted(names["clean"] - names["annotated"])
    only_annot = sorted(names["annotated"] - names["clean"])
    if only_clean or only_annot:
        lines = [f"{root}: {len(only_clean) + len(only_annot)} files have no partner"]
        for label, items in (("clean/", only_clean), ("annotated/", only_annot)):
            if items:
                shown = ", ".join(items[:10]) + (", ..." if len(items) > 10 else "")
                lines.append(f"  only in {label} ({len(items)}): {shown}")
        raise DatasetError("\n".join(lines))
    groups = _manifest_groups(root / "manifest.jsonl")
    pairs = []
    for name in sorted(names["clean"]):
        # The mask has the pair's name, or the same stem as PNG (masks are written
        # losslessly: a JPEG or DICOM pair keeps its mask as .png).
        candidates = (root / "masks" / name, (root / "masks" / name).with_suffix(".png"))
        mask = next((m for m in candidates if m.is_file()), None)
        pairs.append(
            Pair(
                name=name,
                clean=root / "clean" / name,
                annotated=root / "annotated" / name,
                mask=mask,
                group=groups.get(name, name),
            )
        )
    return pairs


def split_pairs(items: Sequence, val_split: float, seed: int) -> tuple[list, list]:
    """Deterministic train/validation split by group (stable when files are added).

    ``items`` are :class:`Pair` (grouped by source scan) or paths (each its own group,
    named relative to their common folder: the split must not change when the data
    folder is moved or the same run is repeated somewhere else).
    """
    if val_split <= 0 or len(items) < 2:
        return list(items), []
    paths = [str(p) for p in items if not isinstance(p, Pair)]
    base = (os.path.commonpath(paths) if paths else "") or os.curdir

    def group(item) -> str:
        if isinstance(item, Pair):
            return item.group
        return Path(os.path.relpath(item, base)).as_posix()

    groups = sorted(
        {group(p) for p in items},
        key=lambda g: zlib.crc32(f"{seed}:{g}".encode("utf-8", "surrogateescape")),
    )
    n_val = min(max(1, round(len(groups) * val_split)), len(groups) - 1)
    val_groups = set(groups[:n_val])
    train = [p for p in items if group(p) not in val_groups]
    val = [p for p in items if group(p) in val_groups]
    return train, val


def check_pairs(pairs: Sequence[Pair]) -> tuple[list[Pair], list[str]]:
    """Read headers only; return usable pairs and one error line per broken pair."""
    good, errors = [], []
    for pair in pairs:
        try:
            sizes = {image_size(p) for p in (pair.clean, pair.annotated, pair.mask) if p}
            if len(sizes) > 1:
                raise ImageReadError(pair.annotated, f"sizes differ between partners: {sizes}")
            good.append(pair)
        except ImageReadError as exc:
            errors.append(str(exc))
    return good, errors


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one pair as stored: (annotated, clean) in the files' layout, mask bool HxW."""
    clean, annot = read_image(pair.clean), read_image(pair.annotated)
    if clean.shape[:2] != annot.shape[:2]:
        raise ImageReadError(pair.annotated, "size differs from its clean partner")
    if pair.mask is not None:
        mask = to_grey(read_image(pair.mask)) > 0
        if mask.shape != clean.shape[:2]:
            raise ImageReadError(pair.mask, "mask size differs from its image")
    else:
        mask = annotation_mask(annot, clean)
    return annot, clean, mask


def load_pair(pair: Pair, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_pair` in the network's layout: HxWxC in the file's dtype."""
    annot_raw, clean_raw, mask = read_pair(pair)
    convert = to_rgb if channels == 3 else to_grey
    clean, annot = convert(clean_raw), convert(annot_raw)
    if clean.ndim == 2:
        clean, annot = clean[..., None], annot[..., None]
    return annot, clean, mask


def annotation_mask(annotated: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Pixels where any channel differs (alpha ignored)."""
    return differs(split_alpha(annotated)[0], split_alpha(clean)[0])


def resize_pair(
    annot: np.ndarray, clean: np.ndarray, mask: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize to (height, width); a mask pixel stays set if any annotation covers it."""
    h, w = size
    if annot.shape[:2] == (h, w):
        return annot, clean, mask
    shrink = h * w < annot.shape[0] * annot.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR

    def rs(x: np.ndarray) -> np.ndarray:
        y = cv2.resize(x, (w, h), interpolation=interp)
        return y[..., None] if y.ndim == 2 else y

    return rs(annot), rs(clean), resize_mask(mask, size)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` resized to (height, width): a pixel is set if any set pixel covers it."""
    h, w = size
    if mask.shape[:2] == (h, w):
        return mask
    shrink = h * w < mask.shape[0] * mask.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(mask.astype(np.float32), (w, h), interpolation=interp) > 1e-3


def to_chw(image: np.ndarray) -> torch.Tensor:
    """HxWxC float array -> CxHxW tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def as_item(
    annot: np.ndarray, clean: np.ndarray, mask: np.ndarray, interface: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """Arrays (HxWxC integer images, HxW bool masks) -> the tensors a batch holds.

    ``interface``: the scanner interface's pixels where the pair was drawn with one
    (none known otherwise)."""
    if interface is None:
        interface = np.zeros(mask.shape, bool)
    return {
        "annotated": to_chw(to_float(annot)),
        "clean": to_chw(to_float(clean)),
        "mask": torch.from_numpy(mask[None].astype(np.float32)),
        "interface": torch.from_numpy(interface[None].astype(np.float32)),
    }


def echo_collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A batch of echoed items: their patches side by side on the batch dimension."""
    return {key: torch.cat([item[key] for item in items]) for key in items[0]}


class _Epochs:
    """Per-item generators seeded by (seed, epoch, index): reproducible whatever the
    worker count or rank, and different every epoch. Validation sets are ``fixed``:
    the same crops and annotations every epoch, so their losses compare.

    The epoch reaches DataLoader workers inside the index (see :class:`EpochSampler`):
    index ``e * len(dataset) + i`` is item ``i`` in epoch ``e``, so workers can stay
    alive across epochs. ``set_epoch`` sets it for direct use.
    """

    seed: int = 0
    epoch: int = 0
    fixed: bool = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def split_index(self, index: int) -> tuple[int, int]:
        """(epoch, item) for a possibly epoch-encoded index."""
        extra, item = divmod(index, len(self))
        return self.epoch + extra, item

    def item_rng(self, index: int) -> np.random.Generator:
        epoch, item = self.split_index(index)
        epoch = 0 if self.fixed else epoch + 1
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch, item]))


class EpochSampler(Sampler):
    """Wraps a sampler so each index carries its epoch (``epoch * size + i``)."""

    def __init__(self, base: Sampler, size: int) -> None:
        self.base, self.size, self.epoch = base, size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):  # DistributedSampler reshuffles by epoch
            self.base.set_epoch(epoch)

    def __iter__(self):
        offset = self.epoch * self.size
        return (offset + i for i in self.base)

    def __len__(self) -> int:
        return len(self.base)


class PairedDataset(_Epochs, Dataset):
    """Pre-synthesised pairs: ``annotated``, ``clean`` (CxHxW), ``mask`` (1xHxW)."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        size: tuple[int, int] | None,
        channels: int,
        patch: int | None = None,
        cache: bool = True,
        seed: int = 0,
        fixed: bool = False,
        workers: int = 4,
    ) -> None:
        self.pairs = list(pairs)
        self.size = tuple(size) if size else None
        self.channels, self.patch, self.seed, self.fixed = channels, patch, seed, fixed
        self._cache: list | None = None
        if cache and self.pairs:
            # Decode once, in threads (OpenCV and Pillow release the GIL), and keep
            # the file's integer dtype so epochs cost no I/O.
            with ThreadPoolExecutor(max(1, workers)) as pool:
                self._cache = list(pool.map(self._load, range(len(self.pairs))))

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        annot, clean, mask = load_pair(self.pairs[index], self.channels)
        if self.size:
            annot, clean, mask = resize_pair(annot, clean, mask, self.size)
        return annot, clean, mask

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.split_index(index)[1]
        annot, clean, mask = self._cache[item] if self._cache is not None else self._load(item)
        if self.patch:
            y, x = crop_box(mask.shape, self.patch, self.item_rng(index), mask)
            annot, clean, mask = crop([annot, clean, mask], y, x, self.patch)
        return as_item(annot, clean, mask)


class SyntheticDataset(_Epochs, Dataset):
    """Fresh annotations on every access: a few hundred clean scans give unlimited pairs.

    Item ``i`` takes clean scan ``i % n``, augments it, draws with ``drawer`` and
    crops a patch around the marks, all from the item's own generator. With ``echo``
    above 1 an item holds that many patches of one drawing, stacked on a leading
    dimension (:func:`echo_collate` makes a batch of them).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        channels: int,
        size: tuple[int, int] | None,
        patch: int | None,
        drawer: str = "mixed",
        colors: Sequence[str] = ("white", "yellow", "cyan"),
        scanner_ui: str = "keep",
        scanner_ui_share: float = 1.0,
        interface_focus: float = 0.0,
        echo: int = 1,
        labels: Sequence[str] | None = None,
        jpeg_quality: int | tuple[int, int] | None = None,
        repeats: int = 4,
        augment: bool = True,
        seed: int = 0,
        fixed: bool = False,
        workers: int = 4,
    ) -> None:
        self.paths = list(paths)
        self.channels, self.size, self.patch = channels, (tuple(size) if size else None), patch
        self.drawer, self.colors, self.repeats = drawer, tuple(colors), repeats
        self.scanner_ui, self.labels, self.jpeg_quality = scanner_ui, labels, jpeg_quality
        if echo > 1 and not patch:
            raise ValueError("echo cuts several patches from each drawing: it needs a patch")
        self.interface_focus, self.echo = interface_focus, echo
        self.scanner_ui_share = scanner_ui_share
        self.augment, self.seed, self.fixed = augment and not fixed, seed, fixed
        # Where drawing a sample spends its time (bench/speed.py reads it).
        self.stages = StageTimes()
        # Every frame of a cine loop is a scan of its own, held in memory like the rest.
        with ThreadPoolExecutor(max(1, workers)) as pool:
            self._scans = [frame for frames in pool.map(self._load, self.paths) for frame in frames]

    def _load(self, path: Path) -> list[np.ndarray]:
        return [split_alpha(frame)[0] for frame in read_frames(path)]

    def __len__(self) -> int:
        return len(self._scans) * self.repeats

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from annot_denoise.synth.pipeline import annotate, promote

        rng = self.item_rng(index)
        scan = self._scans[self.split_index(index)[1] % len(self._scans)]
        ui, interface, on_interface = self.scanner_ui, None, False
        # Drawn only below a full share, so that share 1 repeats earlier runs' samples.
        if ui != "off" and self.scanner_ui_share < 1 and rng.random() >= self.scanner_ui_share:
            ui = "off"
        windowed = bool(self.patch and not self.size)
        if ui == "keep":
            # The interface is drawn here, not by annotate, so that its pixels are known
            # (the loss weighs them: loss.interface_weight). It belongs to the whole
            # screen (corners, the rim of the fan), so it is burned in before a window
            # is cut; augmenting first keeps its text unmirrored.
            from annot_denoise.synth.scanner_ui import draw_scanner_ui

            with self.stages("scan"):
                if self.augment:
                    scan, _ = augment_scan(scan, rng)
                scan = promote(scan, self.colors).copy()  # the cached scan stays as read
            with self.stages("interface"):
                interface = draw_scanner_ui(scan, rng)
            # Marks cover a few percent of a scan and the interface a few more: left to
            # chance, a patch seldom shows the scanner's text to learn to leave alone.
            if self.interface_focus and interface.any():
                on_interface = bool(rng.random() < self.interface_focus)
            if windowed:
                around = interface if on_interface else None
                at = window_at(scan, int(self.patch * 2.5), rng, around)
                scan, interface = scan[at], interface[at]
            ui = "off"
        else:
            with self.stages("scan"):
                if windowed:
                    # Draw on a window a few patches wide, not the whole scan: the cost
                    # per sample halves on large scans and marks keep their on-screen size.
                    scan = window(scan, int(self.patch * 2.5), rng)
                if self.augment:
                    scan, _ = augment_scan(scan, rng)
        with self.stages("marks"):
            clean, annot, mask, _ = annotate(
                scan,
                self.drawer,
                rng,
                colors=self.colors,
                scanner_ui=ui,
                labels=self.labels,
                jpeg_quality=self.jpeg_quality,
                interface=interface,
            )
        with self.stages("patch"):
            arrays = self._prepared(clean, annot, mask, interface)
            # Data echoing: more patches of one drawing, each cut at its own place.
            items = [self._patch(arrays, rng, on_interface) for _ in range(self.echo)]
            if self.echo == 1:
                return items[0]
            return {key: torch.stack([item[key] for item in items]) for key in items[0]}

    def _prepared(self, clean, annot, mask, interface) -> tuple[np.ndarray, ...]:
        """(annotated, clean, mask, interface) in the network's channels and size, once
        per drawing however many patches are cut from it."""
        if interface is None:
            interface = np.zeros(mask.shape, bool)
        convert = to_rgb if self.channels == 3 else to_grey
        clean, annot = convert(clean), convert(annot)
        if clean.ndim == 2:
            clean, annot = clean[..., None], annot[..., None]
        if self.size:
            # Drawn at the scan's own scale, then resized as a pair (the thesis way).
            interface = resize_mask(interface, self.size)
            annot, clean, mask = resize_pair(annot, clean, mask, self.size)
        return annot, clean, mask, interface

    def _patch(self, arrays: tuple[np.ndarray, ...], rng, on_interface: bool) -> dict:
        """One item of the prepared pair: the patch around a mark, or around the
        interface when ``on_interface``; the whole pair without ``patch``."""
        annot, clean, mask, interface = arrays
        if self.patch:
            if on_interface and interface.any():
                y, x = crop_box(mask.shape, self.patch, rng, interface, focus=1.0)
            else:
                y, x = crop_box(mask.shape, self.patch, rng, mask)
            annot, clean, mask, interface = crop([annot, clean, mask, interface], y, x, self.patch)
        return as_item(annot, clean, mask, interface)


def build_datasets(cfg) -> tuple[Dataset, Dataset, list[str]]:
    """(train, validation, one error line per unusable file) for a TrainConfig."""
    d, seed = cfg.data, cfg.train.seed
    common = dict(channels=d.channels, size=d.size, patch=d.patch, seed=seed)
    if d.on_the_fly:
        paths = list_images(d.clean_dir)
        good, skipped = _readable(paths)
        if not good:
            raise DatasetError(f"{d.clean_dir}: no readable clean scans")
        train_paths, val_paths = split_pairs(good, d.val_split, seed)
        check_patch(d.patch, d.size, train_paths, d.clean_dir)
        synth = dict(
            drawer=d.drawer,
            colors=d.colors,
            scanner_ui=d.scanner_ui,
            scanner_ui_share=d.scanner_ui_share,
            interface_focus=d.interface_focus,
            labels=_labels(d.labels),
            jpeg_quality=d.jpeg_quality,
            **common,
        )
        train = SyntheticDataset(
            train_paths, repeats=d.repeats, augment=d.augment, echo=d.echo, **synth
        )
        # As many validation draws as training ones per scan: a handful of held-out
        # scans alone would make a noisy validation loss.
        val = SyntheticDataset(val_paths, repeats=d.repeats, fixed=True, **synth)
        return train, val, skipped
    pairs, skipped = check_pairs(find_pairs(d.root))
    if not pairs:
        raise DatasetError(f"{d.root}: no usable pairs left to train on")
    train_pairs, val_pairs = split_pairs(pairs, d.val_split, seed)
    check_patch(d.patch, d.size, [p.clean for p in train_pairs], d.root)
    train = PairedDataset(train_pairs, cache=d.cache, **common)
    val = PairedDataset(val_pairs, cache=d.cache, fixed=True, **common)
    return train, val, skipped


def _labels(path: Path | None) -> tuple[str, ...] | None:
    """The label vocabulary of ``data.labels`` (None: the built-in one)."""
    if path is None:
        return None
    from annot_denoise.synth.vocabulary import LabelsError, load_labels

    try:
        return load_labels(path)
    except LabelsError as exc:
        raise DatasetError(f"data.labels: {exc}") from None


def check_patch(
    patch: int | None, size: Sequence[int] | None, paths: Sequence[Path], where: Path
) -> None:
    """Refuse a native-scale ``patch`` that no training image can hold: every crop
    would be mostly zero padding, and the network would learn the padding.

    Headers are read until one image holds the patch (usually the first); the config
    has already compared a patch with a resize target, ``size``.
    """
    if not patch or size:
        return
    largest = (0, 0)
    for path in paths:
        width, height = image_header(path)[:2]
        if min(width, height) >= patch:
            return
        largest = max(largest, (width, height), key=min)
    raise DatasetError(
        f"{where}: data.patch {patch} is larger than every training image; the largest is "
        f"{largest[0]}x{largest[1]} (width x height): lower data.patch to at most "
        f"{min(largest)}, or set data.size"
    )


def _readable(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    good, errors = [], []
    for path in paths:
        try:
            image_header(path)  # any frame count: every frame of a loop is a scan
            good.append(path)
        except ImageReadError as exc:
            errors.append(str(exc))
    return good, errors


def _manifest_groups(path: Path) -> dict[str, str]:
    """Output name -> source scan, from synth's manifest, so copies split together."""
    if not path.is_file():
        return {}
    groups = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            groups[row["output"]] = row["source"]
        except (ValueError, KeyError, TypeError):
            continue
    return groups
