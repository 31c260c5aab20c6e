"""The demo: the recommended workflow on phantom scans, in a few minutes, with no data.

phantoms -> fine-tune the shipped default model on them with annotations drawn
on the fly -> synthesise a held-out test set -> eval the fine-tuned model, the
default model zero-shot and the baselines -> clean a folder of annotated scans
-> report.html. Every step calls the same core function the CLI commands call.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from annot_denoise.clean import clean
from annot_denoise.config import CleanConfig, EvalConfig, validate_config
from annot_denoise.evaluation.evaluate import evaluate
from annot_denoise.inference import Restorer
from annot_denoise.io import atomic_write_text
from annot_denoise.phantom import write_phantoms
from annot_denoise.pretrained import PRETRAINED
from annot_denoise.progress import Progress
from annot_denoise.runtime import resolve_device
from annot_denoise.synth.pipeline import synth
from annot_denoise.training.checkpoint import load_checkpoint, load_model
from annot_denoise.training.loop import train

SIZE = (336, 544)  # (height, width) of the demo scans
COLORS = ("white", "yellow", "cyan", "green")


@dataclass
class DemoResult:
    metrics: dict
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def run_demo(
    out_dir: Path, *, minutes: float = 2.0, device: str = "auto", progress: Progress | None = None
) -> DemoResult:
    """Run the demo into ``out_dir`` (created; an earlier demo's run there is replaced)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    write_phantoms(out_dir / "phantoms" / "train", 48, seed=0, size=SIZE)
    write_phantoms(out_dir / "phantoms" / "test", 16, seed=1, size=SIZE, color=True)
    test = out_dir / "data" / "test"
    synth(out_dir / "phantoms" / "test", test, seed=1, colors=COLORS, progress=progress)

    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo owns its run folder
    arch = load_checkpoint(PRETRAINED["default"])["arch"]["kwargs"]
    cfg = validate_config(
        {
            "data": {
                "on_the_fly": True,
                "clean_dir": str(out_dir / "phantoms" / "train"),
                "colors": list(COLORS),
                # As the default was trained to leave the interface alone (phases 6-7),
                # and its detector last, half of the drawings without one (phase 10).
                "scanner_ui": "keep",
                "scanner_ui_share": 0.5,
                "interface_focus": 0.5,
                "size": None,
                "patch": 128,
                "repeats": 4,
                "val_split": 0.1,
            },
            "model": {
                "arch": "maskunet",
                "width": arch["width"],
                "depth": arch["depth"],
                "init": "default",
                "train_holes": "inference",  # as the default's inpainter (phase 9)
            },
            # And its inpainter with the per-patch log content term (phases 8-9).
            "loss": {"interface_weight": 10.0, "content_metric": "log_mse"},
            "optim": {"name": "adamw", "lr": 1e-4, "warmup_steps": 10},
            "train": {"epochs": 100, "batch_size": 8, "workers": 1, "max_minutes": minutes},
            "output": {"dir": str(run_dir)},
        },
        "<demo>",
    )
    train(cfg, device=str(dev), progress=progress)

    models, curves = {}, {}
    for name, path in (("fine-tuned", run_dir / "best.pt"), ("default", PRETRAINED["default"])):
        model, ckpt = load_model(path, dev)
        models[name] = Restorer.from_checkpoint(model, ckpt, dev)
        curves[name] = ckpt.get("history", []) if name == "fine-tuned" else []
    report = evaluate(
        EvalConfig(data_dir=test, out=out_dir / "eval"),
        models,
        progress=progress,
        curves=curves,
        meta={"models": {"fine-tuned": str(run_dir / "best.pt"), "default": "shipped"}},
    )
    cleaned = out_dir / "cleaned"
    clean(
        CleanConfig(inputs=test / "annotated", out=cleaned, overwrite=True, preview=6),
        models["fine-tuned"],
        progress=progress,
    )
    summary = {"seconds": round(time.perf_counter() - started, 1), "metrics": report.methods}
    atomic_write_text(out_dir / "demo.json", json.dumps(summary, indent=2))
    return DemoResult(
        metrics=report.methods,
        paths={
            "training run (tensorboard --logdir)": run_dir,
            "cleaned scans": cleaned,
            "before/after sheet": cleaned / "clean_preview.png",
            "report": out_dir / "eval" / "report.html",
        },
        seconds=time.perf_counter() - started,
    )
