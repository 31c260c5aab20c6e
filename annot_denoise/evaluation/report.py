"""report.html: one self-contained page a person wants to read.

Metrics table (models vs baselines), training curves (matplotlib), and a gallery
of before / after / predicted mask / difference for the best, median and worst
images. Every image is embedded as a data URI, so the page can be mailed or
archived on its own. ``report.json`` stays the machine-readable twin.

A few lines of script record, in ``<body data-images-ok="N/M">``, how many images
decoded; the browser test reads it (and it costs a reader nothing).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annot_denoise import __version__
from annot_denoise.evaluation.sheet import as_display, thumbnail
from annot_denoise.io import atomic_write_text, encode_image

METRIC_LABELS = {
    "psnr": "PSNR dB",
    "ssim": "SSIM",
    "psnr_mask": "PSNR in mask dB",
    "change_outside": "change outside mask+3px",
    "precision": "mask P",
    "recall": "mask R",
    "f1": "mask F1",
    "iou": "mask IoU",
}


@dataclass
class GalleryItem:
    label: str  # e.g. "best (in-mask PSNR 31.2 dB)"
    name: str
    before: np.ndarray
    after: np.ndarray
    mask: np.ndarray | None


def write_report(
    path: Path,
    *,
    title: str,
    methods: dict[str, dict[str, float]],
    gallery: Sequence[GalleryItem] = (),
    curves: dict[str, list[dict]] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the page; ``curves`` maps a model name to its metrics.jsonl rows."""
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>annot-denoise {__version__}</p>",
        *[f"<p>{html.escape(n)}</p>" for n in notes],
        "<h2>Metrics</h2>",
        _table(methods),
    ]
    if curves and any(curves.values()):
        parts += ["<h2>Training curves</h2>", img_tag(curves_png(curves), "training curves")]
    if gallery:
        parts.append("<h2>Gallery</h2>")
        parts.append("<p>before | after | predicted mask | difference (|after - before|, x4)</p>")
        for item in gallery:
            parts.append(f"<h3>{html.escape(item.label)}: {html.escape(item.name)}</h3>")
            parts.append("<div class='row'>" + "".join(_gallery_cells(item)) + "</div>")
    page = html_page(title, "\n".join(parts))
    atomic_write_text(path, page)
    return Path(path)


def curves_png(curves: dict[str, list[dict]]) -> bytes:
    """Loss and validation PSNR against epoch, one line per model, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display, and no GUI toolkit needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=90)
    for name, rows in curves.items():
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r["train_loss"] for r in rows], label=f"{name} train")
        if "val_loss" in rows[0]:
            axes[0].plot(epochs, [r["val_loss"] for r in rows], "--", label=f"{name} val")
        axes[1].plot(epochs, [r.get("val_psnr", math.nan) for r in rows], label=name)
        axes[2].plot(epochs, [r.get("val_psnr_mask", math.nan) for r in rows], label=name)
    for ax, ylabel in zip(axes, ["loss", "val PSNR (dB)", "val PSNR in mask (dB)"]):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _table(methods: dict[str, dict[str, float]]) -> str:
    keys = [k for k in METRIC_LABELS if any(k in m for m in methods.values())]
    head = "".join(f"<th>{METRIC_LABELS[k]}</th>" for k in keys)
    rows = []
    for name, m in methods.items():
        cells = "".join(f"<td>{_fmt(m.get(k))}</td>" for k in keys)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>"


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if abs(value) < 1.5 else f"{value:.2f}"


def _gallery_cells(item: GalleryItem) -> list[str]:
    before, after = as_display(item.before), as_display(item.after)
    diff = np.clip(np.abs(after.astype(np.int16) - before.astype(np.int16)) * 4, 0, 255)
    mask = item.mask if item.mask is not None else np.zeros(before.shape[:2], bool)
    images = [(before, "before"), (after, "after"), (mask, "mask"), (diff.astype(np.uint8), "diff")]
    return [img_tag(_png(img), alt) for img, alt in images]


def _png(image: np.ndarray, max_side: int = 480) -> bytes:
    return encode_image(thumbnail(image, max_side), ".png")


def img_tag(png: bytes, alt: str) -> str:
    """A PNG embedded in the page (the page stays one self-contained file)."""
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def html_page(title: str, body: str, style: str = "") -> str:
    """A self-contained page; ``style`` adds to (and may override) the shared rules.
    A script records how many images decoded, which the browser tests read."""
    return _PAGE.format(title=html.escape(title), body=body, style=style)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
tr th:first-child {{ text-align: left; }}
.row {{ display: flex; gap: 6px; margin-bottom: 6px; }}
.row img {{ width: 24%; height: auto; border: 1px solid #ddd; }}
.meta {{ color: #777; }}
{style}
</style></head>
<body>
{body}
<script>
window.addEventListener("load", function () {{
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {{
    if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  }}
  document.body.setAttribute("data-images-ok", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""
