"""Real-data benchmark: the models on real scans they never trained on (issue 16, item 5).

    python bench/real.py [--model default] [--also NAME=CHECKPOINT ...] [--out /tmp/real-bench]
                         [--record [--notes FILE]] [--reuse]
    python bench/real.py --write-split

The real scans live outside the project, at ``../shared/data/real-us`` and
``../shared/data/busi`` (relative to the project root); they are never committed.
Without them the script says so in one line and stops.

**The split** (``bench/real_split.json``, committed; names relative to real-us): the
182 clean real-us scans in three parts. ``validation`` is bench/validation_set.py's
(the scans settings are chosen on); ``train`` is every other scan whose licence allows
any use (examples/real_backgrounds.py's rule: what the shipped weights may learn
from); ``test`` is every other scan, i.e. those under non-commercial licences, from
recordings the model never saw. A recording (validation_set's ``group``) that would
fall on both sides of train/test is an error. Every run recomputes the split from
``manifest.csv`` and stops if it differs from the committed file; ``--write-split``
rewrites the file.

**Test split, annotated by synth**: the test scans are staged into ``--out`` and
annotated once by ``synth`` (``mixed`` drawer, colours white, yellow, cyan, green and
``sampled``, ``scanner_ui="keep"``, seed 1616, one copy, lossless). Per method (each
model, then the baselines: ``identity`` changes nothing, ``telea`` is OpenCV inpainting
given the true mask, ``classical`` the blind colour + top-hat method), as
``annot-denoise eval`` scores (``evaluation.evaluate.score``): PSNR over the whole
image and inside the true mask (an exact image counts as 100 dB), mask precision,
recall and F1 (mean over scans). And the collateral damage, pixel by pixel against
the annotated input (the largest difference over the channels, in 8-bit levels):

- *UI changed*: the scanner-interface pixels (where synth's clean image differs from
  the source scan; synth never puts them in the mask) outside the true mask grown by
  3 px, changed by more than 2 levels;
- *anatomy changed*: the other pixels outside the true mask grown by 3 px, changed by
  more than 2 levels.

Shares are pooled over the scans (changed pixels / pixels); per-scan worst cases are
listed by name.

**Real annotated screens** (``real-us/annotated``, ``busi/annotated``; no ground
truth): per model and the classical baseline, the share of pixels changed by more than
2 levels and of pixels detected as marks; per model and set, before | after | mask
contact sheets under ``--out/sheets``. Look at them and pass what you saw with
``--notes FILE``: it is recorded as written.

Everything measured is saved in ``--out/real.json``; ``--reuse`` prints (and with
``--record`` appends) the tables of that earlier run instead of measuring again, so the
notes on its sheets can be added after looking. ``--record`` appends one dated section
to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from ablate import error_levels, regions  # noqa: E402
from common import append_results, command, machine, markdown_table  # noqa: E402
from validation_set import collection, group, read_manifest, split_real  # noqa: E402

SPLIT_FILE = HERE / "real_split.json"
SEED = 1616  # the number; no other bench uses it
COLORS = ("white", "yellow", "cyan", "green", "sampled")
BASELINES = ("identity", "telea", "classical")
TOLERANCE = 2.0  # 8-bit levels: smaller differences are not "changed"
MARGIN = 3  # px around the true mask: anti-aliasing fringes, as in eval
WORST = 5  # scans listed per model and measure
SHEET_ROWS = 8
TITLE = "Real scans: test split and real annotated screens (issue 16)"


# ----------------------------------------------------------------------------- split


def _shippable():
    """examples/real_backgrounds.py's licence rule, by path: one rule for both."""
    spec = importlib.util.spec_from_file_location(
        "real_backgrounds", ROOT / "examples" / "real_backgrounds.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shippable


def licences(real_us: Path) -> dict[str, str]:
    """Clean file -> licence, from real-us's manifest.csv."""
    with (real_us / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return {r["file"]: r["licence"] for r in csv.DictReader(fh) if r["set"] == "clean"}


def split_three(files: Sequence[str], licence: dict[str, str]) -> dict[str, list[str]]:
    """``{"train", "validation", "test"}`` for the clean real-us ``files``: validation as
    bench/validation_set.py, then train = a licence allowing any use, test = the rest."""
    shippable = _shippable()
    parts = split_real(files)
    train = sorted(f for f in parts["test"] if shippable(licence[f]))
    test = sorted(f for f in parts["test"] if not shippable(licence[f]))
    straddling = sorted({group(f) for f in train} & {group(f) for f in test})
    if straddling:
        raise ValueError(f"recordings on both sides of train/test: {', '.join(straddling)}")
    return {"train": train, "validation": parts["validation"], "test": test}


def compute_split(real_us: Path) -> dict[str, list[str]]:
    return split_three(read_manifest(real_us), licences(real_us))


def split_drift(computed: dict[str, list[str]], path: Path = SPLIT_FILE) -> str | None:
    """Why the committed split is not ``computed`` (None when it is)."""
    if not path.is_file():
        return f"{path} is missing; run --write-split"
    committed = json.loads(path.read_text(encoding="utf-8"))
    for part in ("train", "validation", "test"):
        have, want = set(committed.get(part, [])), set(computed[part])
        if have != want:
            moved = sorted(have ^ want)
            return (
                f"{path.name}: {part} differs from what the manifest gives "
                f"({len(moved)} files, e.g. {moved[0]}); check, then --write-split"
            )
    return None


# --------------------------------------------------------------------------- scoring


def damage(
    output: np.ndarray, annotated: np.ndarray, mask: np.ndarray, ui: np.ndarray
) -> dict[str, int]:
    """Pixels outside the true mask grown by MARGIN that ``output`` changes by more than
    TOLERANCE levels: on the scanner interface ``ui`` and on the rest (the anatomy)."""
    away = regions(mask, MARGIN)
    moved = error_levels(output, annotated) > TOLERANCE
    ui_away, anatomy = away & ui, away & ~ui
    return {
        "ui_changed": int(np.count_nonzero(moved & ui_away)),
        "ui_pixels": int(np.count_nonzero(ui_away)),
        "anatomy_changed": int(np.count_nonzero(moved & anatomy)),
        "anatomy_pixels": int(np.count_nonzero(anatomy)),
    }


def stage_test(real_us: Path, files: Sequence[str], out: Path, workers: int) -> Path:
    """Copy the test scans under ``out/sources`` and annotate them into ``out/pairs``."""
    from annot_denoise.synth.pipeline import synth

    for sub in ("sources", "pairs"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for name in files:
        target = out / "sources" / Path(name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_us / name, target)
    report = synth(
        out / "sources",
        out / "pairs",
        drawer="mixed",
        copies=1,
        seed=SEED,
        colors=COLORS,
        workers=workers,
        scanner_ui="keep",
    )
    if not report.ok:
        sys.exit("synth failed:\n" + "\n".join(report.failed))
    return out / "pairs"


def score_test(pairs_dir: Path, sources: Path, restorers: dict, batch: int) -> list[dict]:
    """One row per (scan, method): eval's scores and the damage counts."""
    from annot_denoise.evaluation.baselines import BASELINES as BASELINE_FNS
    from annot_denoise.evaluation.evaluate import score
    from annot_denoise.io import read_image
    from annot_denoise.training.data import find_pairs, read_pair

    manifest = pairs_dir / "manifest.jsonl"
    source_of = {
        row["output"]: row["source"]
        for row in map(json.loads, manifest.read_text(encoding="utf-8").splitlines())
    }
    pairs, rows = find_pairs(pairs_dir), []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        loaded = [read_pair(p) for p in chunk]
        outputs = {name: r.restore([a for a, _, _ in loaded]) for name, r in restorers.items()}
        for i, (pair, (annot, clean, mask)) in enumerate(zip(chunk, loaded)):
            source = read_image(sources / source_of[pair.name])
            ui = (error_levels(clean, source) > 0) & ~mask
            results = {name: (out[i].image, out[i].detected) for name, out in outputs.items()}
            results |= {name: BASELINE_FNS[name](annot, mask) for name in BASELINES}
            for name, (output, predicted) in results.items():
                rows.append({
                    "image": pair.name, "method": name,
                    **score(output, clean, annot, mask, predicted),
                    **damage(output, annot, mask, ui),
                    "mask_pixels": int(np.count_nonzero(mask)),
                })  # fmt: skip
        print(f"  test split: {min(start + batch, len(pairs))}/{len(pairs)} scans", flush=True)
    return rows


def score_annotated(
    folders: dict[str, Path], restorers: dict, sheets: Path, batch: int
) -> list[dict]:
    """Share of pixels changed and detected per real annotated screen; contact sheets."""
    from annot_denoise.evaluation.baselines import classical
    from annot_denoise.evaluation.sheet import contact_sheet
    from annot_denoise.io import list_images, read_image, write_image

    rows = []
    for label, folder in folders.items():
        files = list_images(folder)
        shown: dict[str, list[list[np.ndarray]]] = {name: [] for name in restorers}
        for start in range(0, len(files), batch):
            images = [read_image(f) for f in files[start : start + batch]]
            outputs = {name: r.restore(images) for name, r in restorers.items()}
            outputs["classical"] = [classical(image) for image in images]
            for i, (path, image) in enumerate(zip(files[start:], images)):
                for name, out in outputs.items():
                    output, found = (out[i].image, out[i].detected) if name in restorers else out[i]
                    moved = error_levels(output, image) > TOLERANCE
                    found = moved if found is None else found
                    rows.append({
                        "set": label, "image": path.name, "method": name,
                        "changed": float(moved.mean()), "detected": float(found.mean()),
                    })  # fmt: skip
                    if name in shown:
                        shown[name].append([image, output, found])
        for name, items in shown.items():
            tile = 256 if max(i[0].shape[0] for i in items) <= 256 else 360
            for k in range(0, len(items), SHEET_ROWS):
                grid = contact_sheet(
                    items[k : k + SHEET_ROWS], labels=["before", "after", "mask"], tile_height=tile
                )
                slug = name.replace("/", "_").replace(" ", "_")
                write_image(sheets / f"{label}_{slug}_{k // SHEET_ROWS + 1}.png", grid)
        print(f"  {label}: {len(files)} annotated screens", flush=True)
    return rows


# ---------------------------------------------------------------------------- tables


def _mean(values: Sequence[float]) -> float:
    """As eval: +inf counts as 100 dB, NaN (nothing to measure) is left out."""
    from annot_denoise.evaluation.metrics import PSNR_CAP

    kept = [min(v, PSNR_CAP) for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """method -> means over scans (PSNR, mask scores) and pooled shares."""
    summary = {}
    identity = {r["image"]: r["psnr"] for r in rows if r["method"] == "identity"}
    telea = {r["image"]: r["psnr"] for r in rows if r["method"] == "telea"}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        total = {k: sum(r[k] for r in mine) for k in ("ui_changed", "ui_pixels")}
        total |= {k: sum(r[k] for r in mine) for k in ("anatomy_changed", "anatomy_pixels")}
        over_input = [r["psnr"] - identity[r["image"]] for r in mine]
        summary[method] = {
            "scans": len(mine),
            **{k: _mean([r.get(k, math.nan) for r in mine]) for k in ("psnr", "psnr_mask")},
            **{k: _mean([r.get(k, math.nan) for r in mine]) for k in ("precision", "recall", "f1")},
            "ui_share": total["ui_changed"] / max(total["ui_pixels"], 1),
            "anatomy_share": total["anatomy_changed"] / max(total["anatomy_pixels"], 1),
            "above_input": sum(d > 0 for d in over_input),
            "min_over_input": min(over_input),
            "above_telea": sum(r["psnr"] > telea[r["image"]] for r in mine),
        }
    return summary


def _f(value: float, fmt: str = ".2f") -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def test_table(summary: dict) -> str:
    rows = [
        [
            name,
            _f(m["psnr"]),
            _f(m["psnr_mask"]),
            f"{m['above_input']}/{m['scans']} (min {m['min_over_input']:+.2f})",
            "-" if name == "telea" else f"{m['above_telea']}/{m['scans']}",
            f"{100 * m['ui_share']:.3f}%",
            f"{100 * m['anatomy_share']:.3f}%",
            _f(m["precision"], ".3f"),
            _f(m["recall"], ".3f"),
            _f(m["f1"], ".3f"),
        ]
        for name, m in summary.items()
    ]
    return markdown_table(
        ["method", "PSNR dB", "PSNR in marks dB", "scans above input (dB)",
         "scans above telea", "UI changed >2", "anatomy changed >2", "mask P", "mask R",
         "mask F1"], rows,
    )  # fmt: skip


def worst_table(rows: list[dict], methods: Sequence[str]) -> str:
    """Per model: the scans with the least gain over the input, the most UI and the most
    anatomy changed."""
    identity = {r["image"]: r["psnr"] for r in rows if r["method"] == "identity"}
    lines = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        gain = sorted(mine, key=lambda r: r["psnr"] - identity[r["image"]])[:WORST]
        ui = sorted(mine, key=lambda r: -r["ui_changed"] / max(r["ui_pixels"], 1))[:WORST]
        anat = sorted(mine, key=lambda r: -r["anatomy_changed"] / max(r["anatomy_pixels"], 1))
        lines.append([
            method,
            "; ".join(f"{r['image']} {r['psnr'] - identity[r['image']]:+.2f}" for r in gain),
            "; ".join(f"{r['image']} {100 * r['ui_changed'] / max(r['ui_pixels'], 1):.2f}%"
                      for r in ui),
            "; ".join(f"{r['image']} {100 * r['anatomy_changed'] / r['anatomy_pixels']:.3f}%"
                      for r in anat[:WORST]),
        ])  # fmt: skip
    return markdown_table(
        ["model", "least PSNR gain over the input (dB)", "most UI changed", "most anatomy changed"],
        lines,
    )


def annotated_table(rows: list[dict]) -> str:
    out = []
    for label in dict.fromkeys(r["set"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["set"] == label and r["method"] == method]
            worst = max(mine, key=lambda r: r["changed"])
            out.append([
                label, method, str(len(mine)),
                f"{100 * np.mean([r['changed'] for r in mine]):.2f}%",
                f"{100 * worst['changed']:.2f}% ({worst['image']})",
                f"{100 * np.mean([r['detected'] for r in mine]):.2f}%",
            ])  # fmt: skip
    return markdown_table(
        ["set", "method", "screens", "pixels changed >2 (mean)", "most changed", "detected"], out
    )


def targets(summary: dict, models: Sequence[str]) -> str:
    """The issue's targets on the real test split, per model: met or not."""
    telea = summary["telea"]
    lines = []
    for name in models:
        m = summary[name]
        checks = [
            (f"whole-image PSNR above telea ({m['psnr']:.2f} vs {telea['psnr']:.2f} dB)",
             m["psnr"] > telea["psnr"]),
            (f"above the input on every scan ({m['above_input']}/{m['scans']}, "
             f"least {m['min_over_input']:+.2f} dB)", m["above_input"] == m["scans"]),
            (f"in marks >= telea + 1 dB ({m['psnr_mask'] - telea['psnr_mask']:+.2f} dB)",
             m["psnr_mask"] >= telea["psnr_mask"] + 1),
            (f"UI changed < 0.1% ({100 * m['ui_share']:.3f}%)", m["ui_share"] < 0.001),
            (f"anatomy changed < 0.05% ({100 * m['anatomy_share']:.3f}%)",
             m["anatomy_share"] < 0.0005),
            (f"mask F1 >= 0.90 ({m['f1']:.3f})", m["f1"] >= 0.90),
        ]  # fmt: skip
        met = sum(ok for _, ok in checks)
        said = "; ".join(f"{text}: {'met' if ok else 'NOT met'}" for text, ok in checks)
        lines.append(f"- **{name}**: {met}/{len(checks)} met. {said}.")
    return "\n".join(lines)


def headline(summary: dict, models: Sequence[str]) -> str:
    t, i = summary["telea"], summary["identity"]
    parts = [
        f"{n} {summary[n]['psnr']:.2f} dB (in marks {summary[n]['psnr_mask']:.2f}), UI changed "
        f"{100 * summary[n]['ui_share']:.2f}%, anatomy {100 * summary[n]['anatomy_share']:.3f}%, "
        f"F1 {summary[n]['f1']:.2f}"
        for n in models
    ]
    return (
        f"real test split ({t['scans']} scans): " + "; ".join(parts)
        + f"; telea (true mask) {t['psnr']:.2f} ({t['psnr_mask']:.2f}), input {i['psnr']:.2f}"
    )  # fmt: skip


def body(saved: dict, notes: str | None) -> str:
    summary, models = saved["summary"], saved["models"]
    scans = sorted({r["image"] for r in saved["test"]})
    sources = Counter(collection(name) for name in scans)
    return (
        f"Measured by `{saved['command']}` in {saved['seconds'] / 60:.0f} min "
        f"({saved['machine']}). Models: "
        + ", ".join(f"{k} = `{v}`" for k, v in saved["specs"].items())
        + f". Test split of bench/real_split.json: {len(scans)} real-us scans under "
        "non-commercial licences (none trained on; by collection: "
        + ", ".join(f"{k} {v}" for k, v in sorted(sources.items()))
        + "), annotated by synth (mixed, colours "
        f"{', '.join(COLORS)}, scanner_ui keep, seed {SEED}, one copy, lossless). UI and "
        f"anatomy: pixels outside the true mask grown by {MARGIN} px, changed by more than "
        f"{TOLERANCE:g} levels, pooled over scans.\n\n"
        + test_table(summary)
        + "\nTargets (issue 16):\n\n"
        + targets(summary, models)
        + "\n\nWorst scans per model:\n\n"
        + worst_table(saved["test"], models)
        + "\nReal annotated screens (no ground truth; sheets under "
        f"`{saved['out']}/sheets`):\n\n"
        + annotated_table(saved["annotated"])
        + (f"\nWhat the sheets show:\n\n{notes.strip()}\n" if notes else "")
    )


# ------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real-us", type=Path, default=ROOT.parent / "shared/data/real-us")
    parser.add_argument("--busi", type=Path, default=ROOT.parent / "shared/data/busi")
    parser.add_argument("--model", default="default", help="a shipped model's name or a .pt")
    parser.add_argument(
        "--also", action="append", default=[], metavar="NAME=MODEL",
        help="another model to score (a shipped name or a checkpoint); repeatable",
    )  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("/tmp/real-bench"))
    parser.add_argument("--batch", type=int, default=4, help="scans restored together")
    parser.add_argument("--workers", type=int, default=2, help="synth processes")
    parser.add_argument("--record", action="store_true", help="append a section to RESULTS.md")
    parser.add_argument("--notes", type=Path, help="what the sheets show, recorded as written")
    parser.add_argument("--reuse", action="store_true", help="tables of --out/real.json")
    parser.add_argument("--write-split", action="store_true", help="rewrite real_split.json")
    parser.add_argument("--results", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for item in args.also:
        if "=" not in item or not item.partition("=")[0] or not item.partition("=")[2]:
            parser.error(f"--also {item!r}: expected NAME=MODEL")
    return args


def measure(args: argparse.Namespace) -> dict:
    from annot_denoise.config import InferenceConfig
    from annot_denoise.inference.loading import load_restorer

    started = time.perf_counter()
    specs = {args.model: args.model} | dict(item.partition("=")[::2] for item in args.also)
    restorers = {
        name: load_restorer(InferenceConfig(model=spec, device=args.device))[0]
        for name, spec in specs.items()
    }
    split = compute_split(args.real_us)
    print(f"staging {len(split['test'])} test scans and annotating them", flush=True)
    pairs = stage_test(args.real_us, split["test"], args.out, args.workers)
    test = score_test(pairs, args.out / "sources", restorers, args.batch)
    folders = {"real-us": args.real_us / "annotated", "busi": args.busi / "annotated"}
    sheets = args.out / "sheets"
    shutil.rmtree(sheets, ignore_errors=True)
    annotated = score_annotated(
        {k: v for k, v in folders.items() if v.is_dir()}, restorers, sheets, args.batch
    )
    return {
        "command": command(),
        "machine": machine(),
        "seconds": time.perf_counter() - started,
        "out": args.out.as_posix(),
        "specs": specs,
        "models": list(specs),
        "summary": summarise(test),
        "test": test,
        "annotated": annotated,
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not (args.real_us / "manifest.csv").is_file():
        print(f"no real scans: {args.real_us / 'manifest.csv'} not found; nothing measured")
        return
    computed = compute_split(args.real_us)
    if args.write_split:
        SPLIT_FILE.write_text(json.dumps(computed, indent=1) + "\n", encoding="utf-8")
        sizes = ", ".join(f"{len(v)} {k}" for k, v in computed.items())
        print(f"{SPLIT_FILE.relative_to(ROOT)}: {sizes}")
        return
    if drift := split_drift(computed):
        sys.exit(drift)
    saved_path = args.out / "real.json"
    if args.reuse:
        if not saved_path.is_file():
            sys.exit(f"--reuse: {saved_path} not found; run without --reuse first")
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        saved = measure(args)
        saved_path.write_text(json.dumps(saved, indent=1, allow_nan=True), encoding="utf-8")
    notes = args.notes.read_text(encoding="utf-8") if args.notes else None
    text = body(saved, notes)
    print(text)
    if args.record:
        line = headline(saved["summary"], saved["models"])
        append_results(
            TITLE, text, headline=line, **({"path": args.results} if args.results else {})
        )


if __name__ == "__main__":
    main()
