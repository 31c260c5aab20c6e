"""Quality benchmark: learned methods against the baselines, same images, same budget.

    python bench/quality.py [--minutes 10] [--device auto] [--out /tmp/quality-bench]

Phantom scans (training and held-out test seeds; test sizes up to 1500x1000),
annotations from every built-in drawer, one drawer (``--held-out``, default
arrows) kept out of training to measure generalisation to an unseen style.
Each learned method trains on the fly for the same wall-time budget: ``maskunet``
and ``unet`` on native-scale patches, and the thesis reference (grey autoencoder
at 336x544, SGD). All methods are evaluated on both test sets; the tables are
printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import append_results, markdown_table  # noqa: E402

TRAIN_SIZES = [(336, 544), (480, 640), (600, 800)]
TEST_SIZES = [(336, 544), (600, 800), (1000, 1500)]


def make_scans(out: Path, count: int, sizes, seed: int) -> Path:
    from annot_denoise.io import write_image
    from annot_denoise.phantom import make_phantom

    for i in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        h, w = sizes[i % len(sizes)]
        image = make_phantom(h, w, rng, color=bool(i % 3 == 2))
        write_image(out / f"scan_{h}x{w}_{i:03d}.png", image)
    return out


def method_configs(args, clean_dir: Path, run_root: Path) -> dict[str, dict]:
    common_data = {
        "on_the_fly": True,
        "clean_dir": str(clean_dir),
        "drawer": "heldout:draw_seen",
        "colors": ["white", "yellow", "cyan", "green"],
        "repeats": 8,
        "val_split": 0.1,
    }
    budget = {"epochs": 10_000, "max_minutes": args.minutes, "workers": args.workers}
    patch = {"size": None, "patch": args.patch}
    return {
        "maskunet": {
            "data": {**common_data, **patch},
            "model": {"arch": "maskunet", "width": args.width, "depth": 3},
            "optim": {"name": "adamw", "lr": 2e-3},
            "train": {"batch_size": args.batch, **budget},
            "output": {"dir": str(run_root / "maskunet")},
        },
        "unet": {
            "data": {**common_data, **patch},
            "model": {"arch": "unet", "width": args.width, "depth": 4},
            "optim": {"name": "adamw", "lr": 2e-3},
            "train": {"batch_size": args.batch, **budget},
            "output": {"dir": str(run_root / "unet")},
        },
        "reference": {  # the thesis: grey autoencoder at 336x544, SGD with momentum
            "data": {**common_data, "size": [336, 544], "patch": None, "channels": 1},
            "model": {"arch": "autoencoder", "width": 32, "depth": 4},
            "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "scheduler": "constant"},
            "train": {"batch_size": 8, **budget},
            "output": {"dir": str(run_root / "reference")},
        },
    }


def per_scan_table(per_image: list[dict], methods: list[str]) -> str:
    """Means over the scans Telea (given the true mask) does not restore exactly, and
    per-scan counts. The main table's means count an exact scan as 100 dB; this one
    compares the repairs where there is something to repair on anatomy."""
    from annot_denoise.evaluation.metrics import PSNR_CAP

    inexact = {r["image"] for r in per_image if r["method"] == "telea" and math.isfinite(r["psnr"])}
    rows = []
    for name in methods:
        mine = [r for r in per_image if r["method"] == name]
        same = [r for r in mine if r["image"] in inexact]
        outside = [r["change_outside"] for r in mine]
        rows.append([
            name,
            f"{np.mean([min(r['psnr'], PSNR_CAP) for r in same]):.2f}",
            f"{np.mean([min(r['psnr_mask'], PSNR_CAP) for r in same]):.2f}",
            str(sum(math.isinf(r["psnr"]) for r in mine)),
            f"{max(outside):.4f}",
            str(sum(v >= 0.005 for v in outside)),
        ])  # fmt: skip
    table = markdown_table(
        ["method", f"PSNR dB ({len(inexact)} scans)", "PSNR in mask dB (same scans)",
         f"exact scans (of {len(per_image) // max(len(methods), 1)})",
         "largest change outside mask+3px", "scans with change >= 0.005"], rows,
    )  # fmt: skip
    return f"On the {len(inexact)} scans Telea does not restore exactly, and per scan:\n\n{table}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per method")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("/tmp/quality-bench"))
    parser.add_argument("--held-out", default="arrows")
    parser.add_argument("--train-scans", type=int, default=96)
    parser.add_argument("--test-scans", type=int, default=6, help="per test size")
    parser.add_argument("--patch", type=int, default=192)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default="maskunet,unet,reference")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also score each maskunet's inpainter given the true mask (eval --oracle)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="also score each maskunet with test-time augmentation (clean --tta)",
    )
    parser.add_argument(
        "--scanner-ui",
        default="keep",
        choices=["keep", "off"],
        help="test scans with a scanner interface kept on both images (synth's default), "
        "or without one, as the bench drew them before issue 16",
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--results", type=Path, help="append there instead of bench/RESULTS.md")
    parser.add_argument("--keep", type=Path, help="copy each method's best.pt into this folder")
    parser.add_argument(
        "--reuse",
        type=Path,
        help="skip training: score the checkpoints an earlier --keep saved in this folder",
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="also score a checkpoint trained elsewhere (not under this budget)",
    )
    args = parser.parse_args()
    os.environ["ANNOT_DENOISE_HELD_OUT"] = args.held_out
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])

    import heldout

    from annot_denoise.config import EvalConfig, validate_config
    from annot_denoise.evaluation.evaluate import evaluate
    from annot_denoise.inference import Restorer
    from annot_denoise.runtime import resolve_device
    from annot_denoise.synth.pipeline import synth
    from annot_denoise.training.checkpoint import load_model
    from annot_denoise.training.loop import train

    device = resolve_device(args.device)
    out = args.out
    clean_train = make_scans(out / "scans" / "train", args.train_scans, TRAIN_SIZES, seed=0)
    clean_test = make_scans(out / "scans" / "test", args.test_scans * 3, TEST_SIZES, seed=10_000)
    colors = list(heldout.COLORS)
    sets = {
        "seen styles": synth(clean_test, out / "test" / "seen", drawer="heldout:draw_seen",
                             seed=1, colors=colors, scanner_ui=args.scanner_ui).out_dir,
        f"held-out style ({args.held_out})": synth(clean_test, out / "test" / "heldout",
                                                  drawer=args.held_out, seed=2, colors=colors,
                                                  scanner_ui=args.scanner_ui).out_dir,
    }  # fmt: skip

    runs, restorers = {}, {}
    for name, raw in method_configs(args, clean_train, out / "runs").items():
        if name not in args.methods.split(","):
            continue
        cfg = validate_config(raw, f"<bench {name}>")
        if args.reuse:
            path = args.reuse / f"{name}.pt"
            model, ckpt = load_model(path, device)
            restorers[name] = Restorer.from_checkpoint(model, ckpt, device)
            seconds = sum(r["seconds"] for r in ckpt.get("history", []))
            batch = ckpt["config"]["train"]["batch_size"]
            runs[name] = {
                "steps": ckpt["step"],
                "seconds": seconds,
                "samples": ckpt["step"] * batch,
            }
            continue
        for leftover in ("last.pt", "best.pt", "metrics.jsonl"):
            (Path(cfg.output.dir) / leftover).unlink(missing_ok=True)
        started = time.perf_counter()
        result = train(cfg, device=str(device))
        runs[name] = {"steps": result.steps, "seconds": time.perf_counter() - started,
                      "samples": result.steps * cfg.train.batch_size}  # fmt: skip
        model, ckpt = load_model(Path(cfg.output.dir) / "best.pt", device)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(cfg.output.dir) / "best.pt", args.keep / f"{name}.pt")
        restorers[name] = Restorer.from_checkpoint(model, ckpt, device)
        print(f"{name}: {result.steps} steps in {runs[name]['seconds']:.0f} s", flush=True)

    for item in args.also:
        name, _, path = item.partition("=")
        model, ckpt = load_model(Path(path), device)
        restorers[name] = Restorer.from_checkpoint(model, ckpt, device)

    if args.tta:
        for name, r in list(restorers.items()):
            if r.two_stage:
                restorers[f"{name} (--tta)"] = copy.copy(r)
                restorers[f"{name} (--tta)"].tta = True

    tables = []
    for label, data_dir in sets.items():
        cfg = EvalConfig(data_dir=data_dir, out=out / "eval" / label.split()[0], oracle=args.oracle)
        report = evaluate(cfg, restorers)
        per_image = [r for r in report.per_image if r["method"] == "maskunet"]
        worst_outside = max((r["change_outside"] for r in per_image), default=float("nan"))
        rows = []
        for name, m in report.methods.items():
            mask = [f"{m[k]:.3f}" if k in m else "-" for k in ("precision", "recall", "f1", "iou")]
            rows.append([name, f"{m['psnr']:.2f}", f"{m['ssim']:.4f}", f"{m['psnr_mask']:.2f}",
                         f"{m['change_outside']:.3f}", *mask])  # fmt: skip
        table = markdown_table(
            ["method", "PSNR dB", "SSIM", "PSNR in mask dB", "change outside mask+3px",
             "mask P", "mask R", "mask F1", "mask IoU"], rows,
        )  # fmt: skip
        n = json.loads((report.out_dir / "report.json").read_text())["images"]
        tables.append(
            f"**{label}**: {n} test scans ({', '.join(f'{w}x{h}' for h, w in TEST_SIZES)}), "
            f"maskunet's largest per-image change outside mask+3px: {worst_outside:.3f}\n\n{table}"
            f"\n\n{per_scan_table(report.per_image, list(report.methods))}"
        )
    budget = ", ".join(
        f"{k}: {v['steps']} steps / {v['samples']} samples"
        + (f" in {v['seconds']:.0f} s" if v["seconds"] else " (time not in the checkpoint)")
        for k, v in runs.items()
    )
    body = (
        f"Training budget {args.minutes:g} min per method on {device} ({budget}); "
        f"{args.train_scans} training phantoms, annotations drawn on the fly; held-out "
        f"drawer: {args.held_out}; test scans with the scanner interface "
        f"{'kept' if args.scanner_ui == 'keep' else 'off'} (--scanner-ui {args.scanner_ui})."
        + (
            f" Checkpoints trained by an earlier run (--reuse {args.reuse}), scored with the "
            f"current code; seconds are their training loops' (without validation)."
            if args.reuse
            else ""
        )
        + (f" Also scored, trained elsewhere: {', '.join(args.also)}." if args.also else "")
        + "\n\n"
        + "\n".join(tables)
    )
    print(body)
    if not args.no_record:
        title = "Quality: learned methods vs baselines (issue 3)"
        append_results(title, body, **({"path": args.results} if args.results else {}))


if __name__ == "__main__":
    main()
