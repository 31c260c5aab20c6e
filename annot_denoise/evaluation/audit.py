"""The audit: after cleaning, can a classifier still tell which scans carried marks?

A probe (:mod:`.probe`) is cross-validated on CLEANED (scans that carried marks,
after cleaning) against REFERENCE (scans that never did). Its out-of-fold ROC AUC
says how separable the two sets are: 0.5 is not at all. Two controls give the
number its meaning:

- **power**: RAW (the same scans before cleaning) against REFERENCE must be clearly
  separable, or a low AUC only says the probe is blind at this sample size;
- **the repair's own trace**: half of the REFERENCE scans get marks from the
  project's drawers and are cleaned by ``model``, then compared with the other,
  untouched half. That is how detectable the repaint is on these very scans,
  whatever else differs between CLEANED and REFERENCE.

The residue is the share of pixels the model's own detector still flags on the
cleaned scans, beside the share it flags on REFERENCE (its false alarms there).
:func:`audit` returns an :class:`AuditResult` and writes ``audit.html``,
``audit.json`` and ``per_image.csv``; it never prints.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from annot_denoise import __version__
from annot_denoise.evaluation import probe
from annot_denoise.evaluation.audit_inputs import (
    MIN_SCANS,
    AuditError,
    Scan,
    check_paths,
    check_scans,
    describe_inputs,
    make_scan,
    read_groups,
    read_side,
)
from annot_denoise.guard import WriteGuard
from annot_denoise.io import atomic_write_text, read_image
from annot_denoise.progress import Progress

__all__ = ["AuditConfig", "AuditError", "AuditResult", "Comparison", "audit", "decide"]

log = logging.getLogger(__name__)

ALPHA = 0.05  # p-value below which the probe is said to tell the sets apart
POWER_FLOOR = 0.75  # RAW vs REFERENCE: lowest acceptable lower bound of the AUC interval
CLASSICAL = "classical"  # --model value: the blind classical baseline, no network


class AuditConfig(BaseModel):
    """Everything ``annot-denoise audit`` needs; the CLI maps its options 1:1 onto it."""

    model_config = ConfigDict(extra="forbid")

    cleaned: Path = Field(description="Scans that carried marks, after cleaning.")
    reference: Path = Field(description="Scans that never carried marks, same kind of scanner.")
    raw: Path | None = Field(None, description="The CLEANED scans before cleaning (power check).")
    out: Path = Field(Path("audit"), description="Report folder.")
    groups: Path | None = Field(
        None, description="CSV with columns file,group: files of one group share a fold."
    )
    model: str = Field(
        "default",
        description="Model for the repair control and the residue: a shipped name, a "
        "checkpoint path, or 'classical' (the blind baseline).",
    )
    device: str = "auto"
    folds: int = Field(5, ge=2, le=20)
    bootstrap: int = Field(1000, ge=100, le=100_000)
    permutations: int = Field(1000, ge=19, le=100_000)
    seed: int = Field(0, ge=0)
    probe_size: int = Field(256, ge=64, le=1024, multiple_of=probe.HEAT_BLOCK)
    fail_above: float | None = Field(None, gt=0.0, lt=1.0)
    repair_control: bool = True
    residue: bool = True
    gallery: int = Field(6, ge=0, le=48)


@dataclass
class Comparison:
    name: str  # cleaned, raw or repair
    positive: str  # what the probe scores high
    negative: str
    scans: list[Scan]
    labels: np.ndarray
    result: probe.ProbeResult
    heat: list[np.ndarray] = field(default_factory=list)  # per scan, centred
    evidence: dict = field(default_factory=dict)

    @property
    def summary(self) -> dict:
        r = self.result
        return {
            "positive": self.positive,
            "negative": self.negative,
            "n_positive": int(self.labels.sum()),
            "n_negative": int((~self.labels).sum()),
            "auc": round(r.auc, 4),
            "ci95": [round(r.ci_low, 4), round(r.ci_high, 4)],
            "p_value": round(r.p_value, 5),
            "permutations": r.permutations,
            "bootstrap": r.bootstrap,
            "folds": len(np.unique(r.folds)),
            "evidence": self.evidence,
        }


@dataclass
class AuditResult:
    out_dir: Path
    comparisons: dict[str, Comparison]
    verdict: str  # not-detected, repair-trace, detected or inconclusive
    summary: str  # the verdict in one or two sentences
    residue: dict | None
    notes: list[str]
    failed: list[str]
    fail_above: float | None
    seconds: float

    @property
    def cleaned(self) -> Comparison:
        return self.comparisons["cleaned"]

    @property
    def exceeds(self) -> bool:
        """True when the CLEANED vs REFERENCE interval lies wholly above ``fail_above``
        (``--fail-above``: the CLI exits 1)."""
        return self.fail_above is not None and self.cleaned.result.ci_low > self.fail_above

    @property
    def ok(self) -> bool:
        """Every scan could be read."""
        return not self.failed


Repair = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def audit(cfg: AuditConfig, progress: Progress | None = None) -> AuditResult:
    """Run the probe and its controls on ``cfg``'s folders and write the report."""
    progress = progress or Progress()
    started = time.perf_counter()
    sides = {"cleaned": cfg.cleaned, "reference": cfg.reference}
    if cfg.raw is not None:
        sides["raw"] = cfg.raw
    guard = check_paths(sides, cfg.out)
    group_of = read_groups(cfg.groups) if cfg.groups else {}
    repair = _repairer(cfg) if cfg.repair_control or cfg.residue else None
    failed: list[str] = []
    scans: dict[str, list[Scan]] = {}
    for side, folder in sides.items():
        detect = repair if cfg.residue and side in ("cleaned", "reference") else None
        scans[side] = read_side(side, folder, cfg.probe_size, group_of, failed, detect, progress)
    check_scans(scans, failed)

    notes = describe_inputs(scans, cfg.probe_size, cfg.groups)
    comparisons = {"cleaned": _compare("cleaned", scans["cleaned"], scans["reference"], cfg)}
    if "raw" in scans:
        comparisons["raw"] = _compare("raw", scans["raw"], scans["reference"], cfg)
    if cfg.repair_control and repair is not None:
        control = _repair_control(scans["reference"], repair, cfg, progress)
        if control is None:
            notes.append(
                f"The repair control needs {2 * MIN_SCANS} REFERENCE scans (two halves of "
                f"{MIN_SCANS}); it was skipped."
            )
        else:
            comparisons["repair"] = _compare("repair", *control, cfg)
    residue = _residue(scans, cfg) if cfg.residue and repair is not None else None
    verdict, summary = decide(comparisons)
    result = AuditResult(
        out_dir=Path(cfg.out),
        comparisons=comparisons,
        verdict=verdict,
        summary=summary,
        residue=residue,
        notes=notes,
        failed=failed,
        fail_above=cfg.fail_above,
        seconds=time.perf_counter() - started,
    )
    _write(result, cfg, guard)
    return result


# ----------------------------------------------------------------------- controls


def _repairer(cfg: AuditConfig) -> Repair:
    """``image -> (cleaned, detected mask or None)`` by ``cfg.model``."""
    if cfg.model == CLASSICAL:
        from annot_denoise.evaluation.baselines import classical

        return classical
    from annot_denoise.inference import Restorer
    from annot_denoise.pretrained import resolve_model
    from annot_denoise.runtime import resolve_device
    from annot_denoise.training.checkpoint import load_model

    device = resolve_device(cfg.device)
    net, ckpt = load_model(resolve_model(cfg.model), device)
    restorer = Restorer.from_checkpoint(net, ckpt, device)

    def run(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = restorer.restore([image])[0]
        return out.image, out.detected

    return run


def _repair_control(
    reference: list[Scan], repair: Repair, cfg: AuditConfig, progress: Progress
) -> tuple[list[Scan], list[Scan]] | None:
    """(repaired, untouched): REFERENCE split in two by group; the first half gets
    marks (the ``mixed`` drawer, seeded by file name) and is cleaned by ``repair``."""
    from annot_denoise.synth.pipeline import annotate

    groups = sorted({s.group for s in reference})
    rng = np.random.default_rng([cfg.seed, 1])
    marked = set(rng.permutation(groups)[: len(groups) // 2].tolist())
    first = [s for s in reference if s.group in marked]
    second = [s for s in reference if s.group not in marked]
    if min(len(first), len(second)) < MIN_SCANS:
        return None
    repaired = []
    with progress.task("repair control", total=len(first)) as bar:
        for scan in first:
            image = read_image(scan.path)  # read before, so readable now
            marks_rng = np.random.default_rng([cfg.seed, zlib.crc32(scan.name.encode())])
            _, annotated, _, _ = annotate(image, "mixed", marks_rng)
            cleaned, _ = repair(annotated)
            size = cfg.probe_size
            repaired.append(make_scan("repaired", scan.path, scan.name, scan.group, cleaned, size))
            bar.advance()
    return repaired, second


def _residue(scans: dict[str, list[Scan]], cfg: AuditConfig) -> dict | None:
    shares = {
        side: [s.residue for s in scans[side] if s.residue is not None]
        for side in ("cleaned", "reference")
    }
    if not shares["cleaned"] or not shares["reference"]:
        return None  # a model without a detector (no mask head)
    return {
        "model": cfg.model,
        **{f"{side}_mean": float(np.mean(v)) for side, v in shares.items()},
        **{f"{side}_median": float(np.median(v)) for side, v in shares.items()},
        **{
            f"{side}_scans_above_0.1pct": int(sum(x > 0.001 for x in v))
            for side, v in shares.items()
        },
    }


# ----------------------------------------------------------------------- the probe


def _compare(name: str, positive: list[Scan], negative: list[Scan], cfg: AuditConfig) -> Comparison:
    items = [*positive, *negative]
    if len({s.group for s in items}) < 2:
        raise AuditError(
            f"{name}: every scan is in one group (--groups), so no fold can be held out; "
            "the audit needs scans of at least two groups"
        )
    labels = np.r_[np.ones(len(positive), bool), np.zeros(len(negative), bool)]
    x = np.stack([s.features for s in items])
    result = probe.cross_validate(
        x,
        labels,
        [s.group for s in items],
        folds=cfg.folds,
        permutations=cfg.permutations,
        bootstrap=cfg.bootstrap,
        seed=cfg.seed,
    )
    fold_index = {f: i for i, f in enumerate(np.unique(result.folds))}
    heat = []
    for scan, f in zip(items, result.folds):
        w, offset = result.models[fold_index[f]]
        m = probe.contribution_map(scan.probe, w, offset)
        heat.append(m - np.median(m))
    sides = {"cleaned": "CLEANED", "raw": "RAW", "repair": "REPAIRED half of REFERENCE"}
    negative_name = "untouched half of REFERENCE" if name == "repair" else "REFERENCE"
    comp = Comparison(name, sides[name], negative_name, items, labels, result, heat)
    comp.evidence = _evidence(comp)
    return comp


REGIONS = ("top-left", "top", "top-right", "left", "centre", "right",
           "bottom-left", "bottom", "bottom-right")  # fmt: skip


def _evidence(comp: Comparison) -> dict:
    """Where and in which maps the probe's evidence lies, in numbers a sentence can
    quote: the share of the positive-side excess per region of a 3x3 grid, and the
    score difference (positive minus negative mean) carried by each map's bins."""
    pos = np.mean([h for h, y in zip(comp.heat, comp.labels) if y], axis=0)
    neg = np.mean([h for h, y in zip(comp.heat, comp.labels) if not y], axis=0)
    excess = np.maximum(pos - neg, 0)
    b = excess.shape[0]
    edges = [0, b // 3, 2 * b // 3, b]
    mass = np.array(
        [
            excess[edges[i] : edges[i + 1], edges[j] : edges[j + 1]].sum()
            for i in range(3)
            for j in range(3)
        ]
    )
    total = mass.sum() or 1.0
    x = np.stack([s.features for s in comp.scans])
    w = np.mean([m[0] for m in comp.result.models], axis=0)
    diff = w * (x[comp.labels].mean(axis=0) - x[~comp.labels].mean(axis=0))
    by_map, start = {}, 0
    for name in probe.MAPS:
        n = len(probe.EDGES[name]) - 1
        by_map[name] = round(float(diff[start : start + n].sum()), 4)
        start += n
    return {
        "by_region": {r: round(float(m / total), 3) for r, m in zip(REGIONS, mass)},
        "by_map": by_map,
    }


def decide(comparisons: dict[str, Comparison]) -> tuple[str, str]:
    """The verdict from the AUCs: power first, then CLEANED vs REFERENCE, then the
    repair control."""
    main = comparisons["cleaned"].result
    raw = comparisons.get("raw")
    control = comparisons.get("repair")
    stated = f"CLEANED vs REFERENCE: AUC {main.auc:.3f} [{main.ci_low:.3f}, {main.ci_high:.3f}]"
    if raw is not None and raw.result.ci_low < POWER_FLOOR:
        r = raw.result
        return "inconclusive", (
            f"The probe could not clearly tell RAW from REFERENCE (AUC {r.auc:.3f}, lower "
            f"bound {r.ci_low:.3f} < {POWER_FLOOR}): it lacks power on these scans, so a low "
            f"CLEANED AUC means nothing. {stated}."
        )
    if main.p_value >= ALPHA:
        power = "" if raw is not None else " Power was not checked (no RAW folder)."
        return "not-detected", (
            f"The probe could not tell CLEANED from REFERENCE ({stated}, permutation "
            f"p = {main.p_value:.3f}).{power}"
        )
    if control is not None and main.auc <= control.result.ci_high:
        c = control.result
        return "repair-trace", (
            f"The probe tells CLEANED from REFERENCE ({stated}, p = {main.p_value:.3f}), but "
            f"no more than it tells the model's own repair of REFERENCE scans from untouched "
            f"ones (AUC {c.auc:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]): the trace is the "
            "repaint's, not surviving marks."
        )
    beyond = (
        f", beyond the repair's own trace (AUC {control.result.auc:.3f})"
        if control is not None
        else " (no repair control to compare with)"
    )
    return "detected", (
        f"The probe tells CLEANED from REFERENCE ({stated}, p = {main.p_value:.3f}){beyond}: "
        "marks survive, or the two sets differ in other ways (see the heatmaps and the "
        "caveats)."
    )


# ----------------------------------------------------------------------- notes


CAVEATS = [
    "The probe compares two populations. Anything that differs systematically between "
    "CLEANED and REFERENCE raises the AUC without a single mark surviving: lesion types, "
    "patients, machine, preset, gain and depth, the scanner's own screen furniture, how "
    "the files were exported, resized or compressed.",
    "The power control (RAW vs REFERENCE) shows the probe can see the marks at this "
    "sample size. It is optimistic when the populations differ: that difference helps "
    "RAW as much as it helps CLEANED.",
    "The repair control draws synthetic marks on half of the REFERENCE scans and cleans "
    "them with the same model, then compares them with the untouched half: both halves "
    "are one population, so its AUC is the repaint's own trace. It assumes the synthetic "
    "marks resemble the real ones in size and place; larger real marks leave larger "
    "repaints.",
    "Neither control can separate surviving marks from a population difference when "
    "CLEANED is more detectable than the repair control. The heatmaps help: evidence "
    "concentrated where marks were (and a detector residue above REFERENCE's) points to "
    "surviving marks; evidence spread over the anatomy or the whole frame points to the "
    "populations.",
    "An AUC is about the two sets, not about one scan: a scan high in the gallery is "
    "where the evidence was found, not proof that this scan still carries a mark.",
]


# ----------------------------------------------------------------------- outputs


def _write(result: AuditResult, cfg: AuditConfig, guard: WriteGuard) -> None:
    from annot_denoise.evaluation.audit_report import write_audit_html

    out = Path(cfg.out)
    guard.make_dirs(out)
    payload = {
        "version": __version__,
        "verdict": result.verdict,
        "summary": result.summary,
        "fail_above": result.fail_above,
        "exceeds_fail_above": result.exceeds,
        "comparisons": {k: c.summary for k, c in result.comparisons.items()},
        "residue": result.residue,
        "notes": result.notes,
        "caveats": CAVEATS,
        "failed": result.failed,
        "seconds": round(result.seconds, 2),
        "settings": cfg.model_dump(mode="json"),
        "probe": {
            "features": f"log(1 + share / {probe.EPS:g}) of the pixels in each bin of "
            f"{len(probe.MAPS)} maps: {', '.join(probe.MAPS)} ({probe.N_FEATURES} features)",
            "classifier": f"ridge regression on standardised features, penalty {probe.PENALTY:g}",
            "auc": "out-of-fold ROC AUC, grouped k-fold; 95% interval: percentile group "
            "bootstrap of the whole cross-validation (probe refitted per replicate); p: "
            "one-sided permutation test, the whole fit repeated per permutation",
        },
    }
    atomic_write_text(out / "audit.json", json.dumps(payload, indent=2), guard)
    buf = _io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["comparison", "side", "file", "group", "fold", "label", "score", "residue"])
    for name, comp in result.comparisons.items():
        for scan, y, f, s in zip(comp.scans, comp.labels, comp.result.folds, comp.result.scores):
            share = "" if scan.residue is None else f"{scan.residue:.6f}"
            row = [name, scan.side, scan.name, scan.group, int(f), int(y), f"{s:.6f}", share]
            writer.writerow(row)
    atomic_write_text(out / "per_image.csv", buf.getvalue(), guard)
    write_audit_html(out / "audit.html", result, cfg, guard)
