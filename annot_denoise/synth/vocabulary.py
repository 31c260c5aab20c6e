"""The words clinicians type on scans: built-in labels for several organs, or the user's own.

``random_label`` draws a label from a vocabulary: the built-in one mixes fixed phrases
(breast, gynaecology, abdomen, thyroid and neck, vessels, musculoskeletal, obstetrics,
lung, eye) with side + site + clock-position combinations; a user vocabulary, a plain
list of lines (``load_labels`` reads one label per line from a text file), replaces it
completely.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

LABELS: tuple[str, ...] = (
    # breast
    "RT BREAST", "LT BREAST", "LEFT BREAST", "RIGHT BREAST", "LT AXILLA", "RT AXILLA",
    "RT UIQ", "RT UOQ", "LT LOQ", "LT UOQ", "RT LOQ C", "LT RETROAR", "RT RETROAREOLAR",
    "12 o'clock 3 cm FN", "lt12 above nippl", "RTR UIQ", "RAD", "ARAD",
    # gynaecology and pelvis
    "Rt Ovary", "Lt Ovary", "Rt. Ovary", "Lt. Ovary", "Li Ov", "Re Ov", "RT OVARY",
    "UTERUS", "UT", "ENDO", "CX", "Cervix", "Adnexa", "POD", "BL", "Bladder", "PROSTATE",
    # abdomen
    "Liver", "LIVER", "RT LOBE LIVER", "GB", "CBD", "Rt Kidney", "Lt Kidney", "RT KIDNEY",
    "LT KIDNEY LONG", "Spleen", "Pancreas", "Aorta", "PROX AO", "DIST AO", "IVC", "PV",
    "RUQ", "LUQ", "RLQ", "LLQ", "Appendix", "FLUID", "Morison", "EPIGASTRIC",
    # thyroid and neck
    "THYROID RT", "THYROID LT", "RT LOBE", "LT LOBE", "ISTHMUS", "Rt Thyroid", "NECK LT",
    "LN LEVEL II", "Parotid", "SMG RT",
    # vessels
    "Rt CCA", "Lt ICA", "RT ECA", "LT VA", "CFV", "SFV", "POP V", "GSV", "CCA PROX",
    # musculoskeletal and nerve blocks
    "SUPRASPINATUS", "BICEPS LH", "Achilles", "Rt Hip", "Lt Hip", "Right Hip Coronal",
    "Median N", "Ulnar N", "Femoral N", "Interscalene", "Sciatic",
    # obstetrics
    "BPD", "HC", "AC", "FL", "CRL", "NT", "Placenta", "Fetal Head", "AFI Q1", "Cx Length",
    # lung, heart and eye
    "RT ANT", "LT LAT", "PLAPS", "Pleura", "B-lines", "PLAX", "A4C", "Subcostal",
    "OD", "OS", "Globe", "ONSD",
    # orientation and generic
    "SAG", "TRANS", "LONG", "TRV", "SAG MID", "TRANS LOW", "COR", "OBL", "Mass", "Cyst",
    "Lesion 1", "Node", "Testis RT", "LT TESTIS",
)  # fmt: skip
SIDES: tuple[str, ...] = ("RT", "LT", "Rt", "Lt", "R", "L", "rt", "lt", "Right", "Left")
SITES: tuple[str, ...] = (
    "BREAST", "UIQ", "UOQ", "LIQ", "LOQ", "AXILLA", "RETROAR", "SUBAREOLAR", "NIPPLE",
    "KIDNEY", "LOBE", "OVARY", "NECK", "GROIN", "SHOULDER", "ELBOW", "WRIST", "KNEE",
    "CCA", "ICA", "TESTIS", "ADNEXA", "PLEURA",
)  # fmt: skip
# The longest label ``load_labels`` accepts: a label is typed on one screen line.
MAX_LABEL_CHARS = 60
_MAX_LABELS_FILE = 1 << 20


class LabelsError(ValueError):
    """A labels file that cannot be used, with the file and the reason in its message."""


def random_label(rng: np.random.Generator, vocabulary: Sequence[str] | None = None) -> str:
    """One label: from ``vocabulary`` when given, else a built-in phrase or a side + site
    (+ clock position) combination."""
    if vocabulary:
        return vocabulary[int(rng.integers(len(vocabulary)))]
    u = rng.random()
    if u < 0.55:
        return LABELS[int(rng.integers(len(LABELS)))]
    side = SIDES[int(rng.integers(len(SIDES)))]
    if u < 0.8:
        site = SITES[int(rng.integers(len(SITES)))]
        return f"{side} {site}" if rng.random() < 0.8 else f"{side}{site}"
    hour = int(rng.integers(1, 13))
    parts = [side, f"{hour}" if rng.random() < 0.5 else f"{hour}:00"]
    if rng.random() < 0.5:
        parts.append(f"{int(rng.integers(1, 9))}cm FN" if rng.random() < 0.5 else "FN")
    return " ".join(parts)


def check_labels(labels: Sequence[str], source: str = "labels") -> tuple[str, ...]:
    """``labels`` as a tuple of stripped, non-empty, printable one-line strings.

    Raises ``LabelsError`` naming ``source`` when nothing is left, or when a label is
    longer than ``MAX_LABEL_CHARS`` or holds a control character (a binary file read as
    text, or a stray tab).
    """
    if isinstance(labels, str):
        raise LabelsError(f"{source}: give a list of labels, not one string")
    out = []
    for i, raw in enumerate(labels, 1):
        if not isinstance(raw, str):
            raise LabelsError(f"{source}: label {i} is {type(raw).__name__}, not text")
        label = raw.strip()
        if not label:
            continue
        if len(label) > MAX_LABEL_CHARS:
            raise LabelsError(
                f"{source}: label {i} has {len(label)} characters; at most "
                f"{MAX_LABEL_CHARS} fit on a scan ({label[:20]!r}...)"
            )
        if not label.isprintable():
            raise LabelsError(f"{source}: label {i} holds a control character ({label!r})")
        out.append(label)
    if not out:
        raise LabelsError(f"{source}: no labels (one label per line, blank lines ignored)")
    return tuple(out)


def load_labels(path: str | Path) -> tuple[str, ...]:
    """The labels of a UTF-8 text file, one per line; blank lines are skipped.

    Raises ``LabelsError`` with the path and the reason for a missing, unreadable,
    oversized, non-UTF-8 or empty file, or a line that is no usable label.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise LabelsError(f"{path}: not a file (give a text file, one label per line)")
        if size > _MAX_LABELS_FILE:
            raise LabelsError(f"{path}: {size} bytes; a labels file holds at most 1 MiB")
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise LabelsError(f"{path}: no such labels file") from None
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = text.splitlines()
    try:
        return check_labels(lines, str(path))
    except LabelsError as exc:
        # check_labels counts lines from 1 over the raw lines, so its "label i" is line i.
        raise LabelsError(str(exc).replace(": label ", ": line ", 1)) from None
