"""The demo: the whole pipeline on phantom scans, in a few minutes, with no data.

phantoms -> synth -> train a small U-Net -> eval against the baselines ->
clean a folder of annotated scans. Every step calls the same core function the
corresponding CLI command calls, so the demo shows exactly what users run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from annot_denoise.checkpoint import load_model
from annot_denoise.clean import clean
from annot_denoise.config import validate_config
from annot_denoise.evaluate import evaluate
from annot_denoise.inference import Restorer
from annot_denoise.io import read_image, write_image
from annot_denoise.phantom import write_phantoms
from annot_denoise.progress import Progress
from annot_denoise.runtime import resolve_device
from annot_denoise.sheet import contact_sheet
from annot_denoise.synth.pipeline import synth
from annot_denoise.train import train

SIZE = (256, 384)  # (height, width) of the demo scans; the network trains at full size


@dataclass
class DemoResult:
    metrics: dict
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def run_demo(
    out_dir: Path, *, minutes: float = 2.0, device: str = "auto", progress: Progress | None = None
) -> DemoResult:
    """Run the demo into ``out_dir`` (created; an earlier demo there is replaced)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    write_phantoms(out_dir / "phantoms" / "train", 64, seed=0, size=SIZE)
    write_phantoms(out_dir / "phantoms" / "test", 16, seed=1, size=SIZE)
    colors = ("white", "yellow", "cyan")
    synth(
        out_dir / "phantoms" / "train",
        out_dir / "data" / "train",
        copies=2,
        seed=0,
        colors=colors,
        progress=progress,
    )
    synth(
        out_dir / "phantoms" / "test",
        out_dir / "data" / "test",
        seed=1,
        colors=colors,
        progress=progress,
    )
    run_dir = out_dir / "run"
    _clear_run(run_dir)
    cfg = validate_config(
        {
            "data": {"root": str(out_dir / "data" / "train"), "size": list(SIZE), "val_split": 0.1},
            "model": {"arch": "unet", "width": 16, "depth": 3},
            "optim": {"name": "adamw", "lr": 3e-3, "warmup_steps": 20},
            "train": {"epochs": 200, "batch_size": 8, "workers": 0, "max_minutes": minutes},
            "output": {"dir": str(run_dir)},
        },
        "<demo>",
    )
    train(cfg, device=str(dev), progress=progress)
    model, ckpt = load_model(run_dir / "best.pt", dev)
    restorer = Restorer.from_checkpoint(model, ckpt, dev)
    report = evaluate(
        out_dir / "data" / "test",
        {"model": restorer},
        out_dir / "eval",
        progress=progress,
        meta={"model_path": str(run_dir / "best.pt")},
    )
    cleaned = out_dir / "cleaned"
    clean(
        out_dir / "data" / "test" / "annotated",
        cleaned,
        restorer,
        overwrite=True,
        progress=progress,
    )
    names = sorted(p.name for p in (out_dir / "data" / "test" / "annotated").glob("*.png"))[:6]
    rows = [
        [read_image(out_dir / "data" / "test" / "annotated" / n), read_image(cleaned / n)]
        for n in names
    ]
    sheet = out_dir / "before_after.png"
    write_image(sheet, contact_sheet(rows, labels=["before", "after"], tile_height=256))
    return DemoResult(
        metrics=report.methods,
        paths={
            "report": out_dir / "eval" / "report.json",
            "eval sheet": out_dir / "eval" / "contact_sheet.png",
            "before/after sheet": sheet,
            "cleaned scans": cleaned,
            "run (tensorboard --logdir)": run_dir,
        },
        seconds=time.perf_counter() - started,
    )


def _clear_run(run_dir: Path) -> None:
    """The demo owns its run folder: a rerun starts training afresh."""
    for name in ("last.pt", "best.pt", "metrics.jsonl", "config.yaml"):
        (run_dir / name).unlink(missing_ok=True)
