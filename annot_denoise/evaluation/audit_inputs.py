"""The audit's inputs: folders checked, scans read once into probe inputs, notes.

Every scan is read once: its probe input and features are kept (a few hundred KB),
and when a detector is given its residue is measured on the native image at the
same time. An unreadable file is one line and the audit goes on without it.
"""

from __future__ import annotations

import csv
import io as _io
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annot_denoise.evaluation import probe
from annot_denoise.guard import WriteGuard
from annot_denoise.io import (
    ImageReadError,
    folder_problem,
    list_images,
    printable,
    read_image,
    split_alpha,
)
from annot_denoise.progress import Progress

log = logging.getLogger(__name__)

MIN_SCANS = 10  # per side: fewer and no interval means anything
_FRAME = re.compile(r"\.frame\d+$")

Detect = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


class AuditError(Exception):
    """A problem with the audit as a whole (folders, too few scans, groups), found
    before any result exists."""


@dataclass
class Scan:
    """One readable scan, as the probe sees it."""

    side: str  # cleaned, reference, raw or repaired
    path: Path
    name: str  # path under its folder, POSIX style
    group: str
    size: tuple[int, int]  # height, width
    channels: int  # colour channels, alpha not counted
    probe: np.ndarray  # the probe's input (uint8 RGB, probe_size square)
    features: np.ndarray
    residue: float | None = None  # share of pixels the detector flags
    detected: np.ndarray | None = None  # that detection at probe size (bool)


def check_paths(sides: dict[str, Path], out: Path) -> WriteGuard:
    """Refuse, before any work, missing folders, one folder on two sides, and a report
    folder that is a file or lies among the scans (it would be audited next time)."""
    seen: dict[tuple[int, int], str] = {}
    for side, folder in sides.items():
        folder = Path(folder)
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "no such folder"
            raise AuditError(f"{side.upper()} {printable(str(folder))}: {what}")
        info = folder.stat()
        key = (info.st_dev, info.st_ino)
        if key in seen:
            raise AuditError(
                f"{seen[key].upper()} and {side.upper()} are the same folder "
                f"({printable(str(folder))}); the audit compares two different sets"
            )
        seen[key] = side
    if why := folder_problem(Path(out)):
        raise AuditError(f"-o {printable(str(out))}: {why}")
    guard = WriteGuard.protecting(sides.values())
    if guard.problem(Path(out) / "audit.json"):
        raise AuditError(
            f"-o {printable(str(out))}: lies inside the scanned folders (by name, link or "
            "mount); its images would be audited next time: choose another folder"
        )
    return guard


def read_groups(path: Path) -> dict[str, str]:
    """``file -> group`` from a CSV with the columns ``file`` and ``group``."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"--groups {printable(str(path))}: cannot read ({exc})") from None
    reader = csv.DictReader(_io.StringIO(text))
    if not reader.fieldnames or not {"file", "group"} <= set(reader.fieldnames):
        raise AuditError(
            f"--groups {printable(str(path))}: needs a header with the columns 'file' and "
            f"'group' (found {reader.fieldnames or 'none'})"
        )
    groups = {}
    for row in reader:
        name, group = (row.get("file") or "").strip(), (row.get("group") or "").strip()
        if name and group:
            groups[name.replace("\\", "/")] = group
    if not groups:
        raise AuditError(f"--groups {printable(str(path))}: no rows with a file and a group")
    return groups


def group_key(side: str, name: str, group_of: dict[str, str]) -> str:
    """The CSV's group (looked up by path under the folder, file name, then stem), else
    the stem on its side: a scan's copies and a clip's frames stay together."""
    base = name.rsplit("/", 1)[-1]
    stem = _FRAME.sub("", base.rsplit(".", 1)[0] if "." in base else base)
    for key in (name, base, stem):
        if key in group_of:
            return f"csv:{group_of[key]}"
    return f"{side}:{stem}"


def check_scans(scans: dict[str, list[Scan]], failed: list[str]) -> None:
    for side, items in scans.items():
        if len(items) < MIN_SCANS:
            unreadable = sum(1 for line in failed if line.startswith(f"{side.upper()} "))
            extra = f" ({unreadable} unreadable)" if unreadable else ""
            raise AuditError(
                f"{side.upper()}: {len(items)} readable scans{extra}; the audit needs at "
                f"least {MIN_SCANS} on each side"
            )


def _channel_words(channels: set[int]) -> str:
    names = {1: "1 channel (grey)", 3: "3 channels (RGB)"}
    return " or ".join(names.get(c, f"{c} channels") for c in sorted(channels))


def read_side(
    side: str,
    folder: Path,
    size: int,
    group_of: dict[str, str],
    failed: list[str],
    detect: Detect | None,
    progress: Progress,
) -> list[Scan]:
    """Every readable scan under ``folder``; an unreadable one is one line in ``failed``
    (and the log) and the audit goes on without it."""
    paths = list_images(Path(folder))
    scans = []
    with progress.task(f"reading {side.upper()}", total=len(paths)) as bar:
        for path in paths:
            try:
                image = read_image(path)
            except ImageReadError as exc:
                failed.append(f"{side.upper()} {exc}")
                log.error("%s", exc)
                bar.advance()
                continue
            name = path.relative_to(folder).as_posix()
            scan = make_scan(side, path, name, group_key(side, name, group_of), image, size)
            if detect is not None:
                _, found = detect(image)
                if found is not None:
                    scan.residue = float(found.mean())
                    scan.detected = _at_probe_size(found, size)
            scans.append(scan)
            bar.advance()
    return scans


def make_scan(side: str, path: Path, name: str, group: str, image: np.ndarray, size: int) -> Scan:
    color, _ = split_alpha(image)
    x = probe.probe_input(image, size)
    return Scan(
        side=side,
        path=path,
        name=name,
        group=group,
        size=(int(image.shape[0]), int(image.shape[1])),
        channels=1 if color.ndim == 2 else int(color.shape[2]),
        probe=x,
        features=probe.features(x),
    )


def _at_probe_size(mask: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0


def describe_inputs(scans: dict[str, list[Scan]], size: int, groups: Path | None) -> list[str]:
    """Notes on what was met: sizes, channel layouts, formats, RAW twins, groups."""
    notes = []
    sizes = {side: Counter(s.size for s in items) for side, items in scans.items()}
    described = []
    for side, counter in sizes.items():
        if len(counter) == 1:
            (h, w), n = next(iter(counter.items()))
            described.append(f"{side.upper()} {n} scans of {w}x{h}")
        else:
            hs = [h for h, _ in counter.elements()]
            ws = [w for _, w in counter.elements()]
            described.append(
                f"{side.upper()} {sum(counter.values())} scans from {min(ws)}x{min(hs)} to "
                f"{max(ws)}x{max(hs)}"
            )
    sq = size
    notes.append(
        "Sizes: " + "; ".join(described) + f". Every scan is resized to {sq}x{sq} for the "
        "probe (aspect ratio not kept; alpha dropped, grey repeated to RGB)."
    )
    if set(sizes["cleaned"]) != set(sizes["reference"]):
        notes.append(
            "The sides come in different sizes: resizing changes the speckle's grain, which "
            "the probe can see. A size difference is a population difference."
        )
    ref = {s.channels for s in scans["reference"]}
    for side in ("cleaned", "raw"):
        mine = {s.channels for s in scans.get(side, [])}
        if mine and mine != ref:
            shared = "none" if not mine & ref else "some"
            line = (
                f"Channel layouts differ: {side.upper()} scans have {_channel_words(mine)}, "
                f"REFERENCE scans {_channel_words(ref)} ({shared} in common). The probe "
                "sees every scan as RGB (grey repeated), so the layout alone is invisible to "
                "it, but colour is not: a tint, or colour left by the repair, counts."
            )
            log.warning("%s", line)
            notes.append(line)
    formats = {
        side: dict(Counter(s.path.suffix.lower() or "(none)" for s in items))
        for side, items in scans.items()
    }
    if len({tuple(sorted(f)) for f in formats.values()}) > 1:
        notes.append(
            "File formats differ between the sides: "
            + "; ".join(f"{side.upper()} {f}" for side, f in formats.items())
            + ". Compression artefacts alone (JPEG blocks) can be detectable."
        )
    if "raw" in scans:
        raw_names = {s.name for s in scans["raw"]}
        twins = sum(s.name in raw_names for s in scans["cleaned"])
        if twins < len(scans["cleaned"]):
            notes.append(
                f"{twins} of {len(scans['cleaned'])} CLEANED scans have a RAW file of the same "
                "name: RAW should be the same scans before cleaning."
            )
    else:
        notes.append("No RAW folder: the probe's power was not checked.")
    if groups is not None:
        grouped = sum(s.group.startswith("csv:") for items in scans.values() for s in items)
        notes.append(f"Groups: {grouped} scans were grouped by {groups}; others by stem.")
    return notes
