"""audit.html: the audit's verdict, numbers, heatmaps and gallery on one page.

Self-contained like eval's report.html (:mod:`.report`): every image is a PNG data
URI, and a few lines of script record in ``<body data-images-ok="N/M">`` how many
images decoded, for the browser test.
"""

from __future__ import annotations

import html
import io
from typing import TYPE_CHECKING

import cv2
import numpy as np

from annot_denoise import __version__
from annot_denoise.evaluation.audit import ALPHA, CAVEATS, POWER_FLOOR
from annot_denoise.evaluation.report import html_page, img_tag
from annot_denoise.guard import WriteGuard
from annot_denoise.io import atomic_write_text, encode_image

if TYPE_CHECKING:
    from pathlib import Path

    from annot_denoise.evaluation.audit import AuditConfig, AuditResult, Comparison

TITLES = {
    "cleaned": "CLEANED vs REFERENCE (the audit)",
    "raw": "RAW vs REFERENCE (power control)",
    "repair": "repaired vs untouched REFERENCE (the repair's own trace)",
}
VERDICT_COLOURS = {
    "not-detected": "#2e7d32",
    "repair-trace": "#9e7c00",
    "detected": "#c62828",
    "inconclusive": "#555",
}


def write_audit_html(
    path: Path, result: AuditResult, cfg: AuditConfig, guard: WriteGuard | None = None
) -> None:
    colour = VERDICT_COLOURS[result.verdict]
    parts = [
        f"<h1>annot-denoise audit: {html.escape(str(cfg.cleaned))}</h1>",
        f"<p class='meta'>annot-denoise {__version__}; reference {html.escape(str(cfg.reference))}"
        f"; {result.seconds:.0f} s</p>",
        f"<div class='verdict' style='border-color:{colour}'><b style='color:{colour}'>"
        f"{html.escape(result.verdict)}</b>: {html.escape(result.summary)}</div>",
    ]
    if result.fail_above is not None:
        state = "above" if result.exceeds else "not above"
        parts.append(
            f"<p>--fail-above {result.fail_above:g}: the interval's lower bound "
            f"{result.cleaned.result.ci_low:.3f} is {state} it.</p>"
        )
    parts += ["<h2>How separable are the sets?</h2>", _table(result), _forest(result)]
    parts.append(
        "<p>AUC: out-of-fold ROC AUC of the probe (0.5: it cannot tell the sets apart; 1: "
        f"always). 95% interval: group bootstrap. p: permutation test (below {ALPHA} the "
        f"sets are told apart). Power is shown when RAW vs REFERENCE has a lower bound of at "
        f"least {POWER_FLOOR}.</p>"
    )
    if result.residue:
        parts += ["<h2>Residue: what the model's detector still finds</h2>", _residue(result)]
    parts.append("<h2>Where the probe finds its evidence</h2>")
    parts.append(
        "<p>Each pixel's share of the probe's score (exact for this linear probe), minus "
        "the scan's median share; red pushes towards the first set, blue towards the "
        "second; averaged over the scans of each set, on the probe's square input.</p>"
    )
    for name, comp in result.comparisons.items():
        parts.append(f"<h3>{html.escape(TITLES[name])}</h3>")
        parts.append(img_tag(_heat_figure(comp), f"mean heatmap {name}"))
        parts.append(f"<p class='meta'>{html.escape(_evidence_words(comp))}</p>")
    if cfg.gallery:
        parts.append("<h2>The most detectable CLEANED scans</h2>")
        parts.append(
            "<p>Highest out-of-fold probe scores: the scan as the probe sees it | its heatmap "
            "| what the model's detector still flags (red), when it has one.</p>"
        )
        parts += _gallery(result.cleaned, cfg.gallery)
    parts.append("<h2>What the controls can and cannot separate</h2>")
    parts.append("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in CAVEATS) + "</ul>")
    parts.append("<h2>Notes</h2>")
    parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result.notes) + "</ul>")
    if result.failed:
        parts.append(f"<h2>Unreadable files ({len(result.failed)})</h2>")
        shown = result.failed[:50]
        parts.append("<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in shown) + "</ul>")
    settings = cfg.model_dump(mode="json")
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in settings.items()
    )
    parts += ["<h2>Settings</h2>", f"<table class='settings'>{rows}</table>"]
    page = html_page("annot-denoise audit", "\n".join(parts), _STYLE)
    atomic_write_text(path, page, guard)


def _table(result: AuditResult) -> str:
    head = "<tr><th>comparison</th><th>n</th><th>AUC</th><th>95% interval</th><th>p</th></tr>"
    rows = []
    for name, comp in result.comparisons.items():
        r = comp.result
        n = f"{int(comp.labels.sum())} + {int((~comp.labels).sum())}"
        rows.append(
            f"<tr><th>{html.escape(TITLES[name])}</th><td>{n}</td><td>{r.auc:.3f}</td>"
            f"<td>{r.ci_low:.3f} - {r.ci_high:.3f}</td><td>{r.p_value:.4f}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _residue(result: AuditResult) -> str:
    r = result.residue
    return (
        "<table><tr><th>set</th><th>mean share of pixels flagged</th><th>median</th>"
        "<th>scans above 0.1%</th></tr>"
        + "".join(
            f"<tr><th>{side.upper()}</th><td>{100 * r[f'{side}_mean']:.3f}%</td>"
            f"<td>{100 * r[f'{side}_median']:.3f}%</td>"
            f"<td>{r[f'{side}_scans_above_0.1pct']}</td></tr>"
            for side in ("cleaned", "reference")
        )
        + "</table><p>On REFERENCE the detector's flags are false alarms: a CLEANED share "
        "near or below REFERENCE's means little is left that the detector can see. When "
        "this model is the one that cleaned CLEANED, it already repainted everything it "
        "found, so its residue there is near zero by construction; it tells most about "
        "scans cleaned by something else.</p>"
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def _forest(result: AuditResult) -> str:
    plt = _pyplot()
    names = list(result.comparisons)
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(names)), dpi=90)
    for i, name in enumerate(names):
        r = result.comparisons[name].result
        err = [[r.auc - r.ci_low], [r.ci_high - r.auc]]
        ax.errorbar(r.auc, i, xerr=err, fmt="o", capsize=4)
    ax.axvline(0.5, color="#999", ls="--")
    if result.fail_above is not None:
        ax.axvline(result.fail_above, color="#c62828", ls=":")
    ax.set_yticks(range(len(names)), [TITLES[n].split(" (")[0] for n in names])
    ax.set_xlim(0, 1)
    ax.set_xlabel("ROC AUC (95% interval)")
    ax.invert_yaxis()
    fig.tight_layout()
    return img_tag(_figure_png(fig), "AUC intervals")


def _means(comp: Comparison) -> tuple[np.ndarray, np.ndarray]:
    pos = np.mean([h for h, y in zip(comp.heat, comp.labels) if y], axis=0)
    neg = np.mean([h for h, y in zip(comp.heat, comp.labels) if not y], axis=0)
    return pos, neg


def _heat_figure(comp: Comparison) -> bytes:
    plt = _pyplot()
    pos, neg = _means(comp)
    limit = float(np.quantile(np.abs(np.concatenate([pos.ravel(), neg.ravel()])), 0.99)) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8), dpi=90)
    for ax, m, label in zip(axes, (pos, neg), (comp.positive, comp.negative)):
        shown = ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"mean over {label}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes, shrink=0.8)
    return _figure_png(fig)


def _evidence_words(comp: Comparison) -> str:
    ev = comp.evidence
    regions = sorted(ev["by_region"].items(), key=lambda kv: -kv[1])[:3]
    maps = sorted(ev["by_map"].items(), key=lambda kv: -abs(kv[1]))[:3]
    where = ", ".join(f"{r} {100 * v:.0f}%" for r, v in regions)
    what = ", ".join(f"{m} {v:+.3f}" for m, v in maps)
    return (
        f"Where {comp.positive} gets more evidence than {comp.negative}: {where}. "
        f"Score difference carried by each map's bins (largest): {what}."
    )


def _overlay(image: np.ndarray, heat: np.ndarray, limit: float) -> np.ndarray:
    from matplotlib import colormaps

    size = image.shape[0]
    up = cv2.resize(heat, (size, size), interpolation=cv2.INTER_LINEAR)
    rgb = colormaps["RdBu_r"](np.clip(up / limit, -1, 1) * 0.5 + 0.5)[..., :3]
    weight = np.clip(np.abs(up) / limit, 0, 1)[..., None] * 0.7
    out = image.astype(np.float32) / 255 * (1 - weight) + rgb * weight
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def _gallery(comp: Comparison, count: int) -> list[str]:
    positives = [i for i, y in enumerate(comp.labels) if y]
    ranked = sorted(positives, key=lambda i: -comp.result.scores[i])[:count]
    all_heat = np.abs(np.stack([comp.heat[i] for i in positives]))
    limit = float(np.quantile(all_heat, 0.995)) or 1.0
    parts = []
    for rank, i in enumerate(ranked, 1):
        scan = comp.scans[i]
        heat = _overlay(scan.probe, comp.heat[i], limit)
        cells = [img_tag(_png(scan.probe), "scan"), img_tag(_png(heat), "heatmap")]
        if scan.detected is not None:
            flagged = scan.probe.copy()
            flagged[scan.detected] = (230, 30, 30)
            cells.append(img_tag(_png(flagged), "detected"))
        residue = "" if scan.residue is None else f", detector flags {100 * scan.residue:.2f}%"
        parts.append(
            f"<h3>{rank}. {html.escape(scan.name)} (score {comp.result.scores[i]:.3f}"
            f"{residue})</h3><div class='row'>{''.join(cells)}</div>"
        )
    return parts


def _png(image: np.ndarray) -> bytes:
    return encode_image(image, ".png")


# What the audit page adds to the shared page style.
_STYLE = """body { max-width: 1100px; }
.settings td { text-align: left; }
.verdict { border-left: 6px solid; padding: 0.6em 1em; background: #f6f6f6; }
.row img { width: 32%; }"""
