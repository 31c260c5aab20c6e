"""Audit the shipped models and the classical baseline on real scans (issue 18).

    python bench/audit.py [--busi ../shared/data/busi] [--real-us ../shared/data/real-us]
                          [--work DIR] [--record]

For each data set and each method (``default``, ``classical``) the
annotated scans are cleaned into ``WORK`` and :func:`annot_denoise.evaluation.audit.audit`
compares them with the reference scans, with RAW (the scans before cleaning) for
power and the method's own repair control. Printed: one table of AUCs with their
95% intervals and permutation p-values, the residue the method's detector still
finds, and in words where the probe found its evidence; ``--record`` appends it to
bench/RESULTS.md. The HTML reports stay under ``WORK/<set>/report-<method>/``.

- **BUSI** (``busi/``): RAW is the 40 ``annotated/`` scans with real marks,
  REFERENCE the 102 ``clean/`` ones. The two sets were selected differently (the
  clean ones for carrying no corner marker, the annotated ones for their marks; a
  different mix of benign, malignant and normal), so this is the population
  difference the audit warns about, measured.
- **real-us** (``real-us/``): only 4 scans carry real marks, too few to audit. The
  182 clean scans are split in two by recording (frames of one clip on one side;
  each collection split evenly, in the SHA-256 order of collection and recording):
  one half gets synthetic marks (the ``mixed`` drawer, seeded by file name) and is
  RAW, the other half is REFERENCE. One population on both sides: what is left to
  detect is the marks and the repair. A groups CSV keeps each recording in one fold.

The data never enter the repository; without them the script says so and stops.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import append_results, markdown_table  # noqa: E402
from validation_set import group  # noqa: E402

METHODS = ("default", "classical")
SEED = 18


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busi", type=Path, default=HERE.parent / "../shared/data/busi")
    parser.add_argument("--real-us", type=Path, default=HERE.parent / "../shared/data/real-us")
    parser.add_argument("--work", type=Path, help="Folder for cleaned scans and reports.")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", action="store_true", help="Append to bench/RESULTS.md.")
    return parser.parse_args(argv)


def cleaner(method: str, device: str):
    """``image -> cleaned image`` for a shipped model or the classical baseline."""
    if method == "classical":
        from annot_denoise.evaluation.baselines import classical

        return lambda image: classical(image)[0]
    import torch

    from annot_denoise.inference import Restorer
    from annot_denoise.pretrained import resolve_model
    from annot_denoise.training.checkpoint import load_model

    net, ckpt = load_model(resolve_model(method), device)
    restorer = Restorer.from_checkpoint(net, ckpt, torch.device(device))
    return lambda image: restorer.restore([image])[0].image


def clean_folder(src: Path, dst: Path, method: str, device: str) -> float:
    from annot_denoise.io import list_images, read_image, write_image

    run = cleaner(method, device)
    started = time.perf_counter()
    for path in list_images(src):
        write_image(dst / path.relative_to(src), run(read_image(path)))
    return time.perf_counter() - started


def stage_busi(busi: Path, work: Path) -> dict:
    return {"raw": busi / "annotated", "reference": busi / "clean", "groups": None}


def stage_real_us(real_us: Path, work: Path) -> dict:
    """Split the clean scans by recording; mark one half (RAW), copy the other."""
    from annot_denoise.io import read_image, write_image
    from annot_denoise.synth.pipeline import annotate

    with open(real_us / "manifest.csv", newline="") as fh:
        files = sorted(row["file"] for row in csv.DictReader(fh) if row["set"] == "clean")
    by_collection: dict[str, list[str]] = {}
    for name in sorted({group(f) for f in files}):
        by_collection.setdefault(name.split("/", 1)[0], []).append(name)
    marked: set[str] = set()
    for groups in by_collection.values():
        ordered = sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
        marked.update(ordered[: len(ordered) // 2])
    raw, reference = work / "raw", work / "reference"
    rows = []
    for name in files:
        # Both sides as PNG of the decoded scan: a JPEG's blocks stay in its pixels on
        # either side, and the container says nothing.
        target = Path(name).stem + ".png"
        image = read_image(real_us / name)
        if group(name) in marked:
            rng = np.random.default_rng([SEED, zlib.crc32(target.encode())])
            _, image, _, _ = annotate(image, "mixed", rng)
        write_image((raw if group(name) in marked else reference) / target, image)
        rows.append((target, group(name)))
    groups = work / "groups.csv"
    with open(groups, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "group"])
        writer.writerows(rows)
    return {"raw": raw, "reference": reference, "groups": groups}


def code_state() -> str:
    """The commit, and whether files that shape the numbers differ from it."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=HERE.parent, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip

    dirty = git("status", "--porcelain", "--", "annot_denoise", "bench/audit.py")
    return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")


def words(comp) -> str:
    ev = comp.evidence
    regions = sorted(ev["by_region"].items(), key=lambda kv: -kv[1])[:2]
    maps = sorted(ev["by_map"].items(), key=lambda kv: -abs(kv[1]))[:2]
    where = " and ".join(f"{r} ({100 * v:.0f}%)" for r, v in regions)
    what = " and ".join(f"{m} ({v:+.2f})" for m, v in maps)
    return f"excess evidence {where}; carried by the {what} bins"


def fmt(r) -> tuple[str, str, str]:
    return f"{r.auc:.3f}", f"{r.ci_low:.3f}-{r.ci_high:.3f}", f"{r.p_value:.4f}"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from annot_denoise.evaluation.audit import AuditConfig, audit

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sets = {"busi": args.busi, "real-us": args.real_us}
    missing = [f"{name}: {path}" for name, path in sets.items() if not path.is_dir()]
    if missing:
        sys.exit("bench/audit.py needs the real scans, not found here: " + "; ".join(missing))
    work = args.work or Path(tempfile.mkdtemp(prefix="audit-bench-"))
    started = time.perf_counter()
    rows, lines, timing = [], [], []
    for name, root in sets.items():
        place = work / name
        staged = (stage_busi if name == "busi" else stage_real_us)(root.resolve(), place)
        print(f"{name}: RAW {staged['raw']}, REFERENCE {staged['reference']}", flush=True)
        power_done = False
        for method in methods:
            cleaned = place / f"cleaned-{method}"
            if cleaned.exists():
                shutil.rmtree(cleaned)
            seconds = clean_folder(staged["raw"], cleaned, method, args.device)
            t0 = time.perf_counter()
            cfg = AuditConfig(
                cleaned=cleaned,
                reference=staged["reference"],
                raw=staged["raw"],
                groups=staged["groups"],
                out=place / f"report-{method}",
                model=method,
                device=args.device,
                permutations=args.permutations,
                bootstrap=args.bootstrap,
                seed=0,
            )
            result = audit(cfg)
            timing.append(f"{name} {method}: cleaning {seconds:.0f} s, audit "
                          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
            first_row = len(rows)
            main_ = result.cleaned
            n = f"{int(main_.labels.sum())} + {int((~main_.labels).sum())}"
            if not power_done and "raw" in result.comparisons:
                raw = result.comparisons["raw"]
                n_raw = f"{int(raw.labels.sum())} + {int((~raw.labels).sum())}"
                rows.append([name, "RAW vs REFERENCE (power)", n_raw, *fmt(raw.result), ""])
                lines.append(f"- {name}, RAW vs REFERENCE: {words(raw)}.")
                power_done = True
            rows.append([name, f"cleaned by {method}", n, *fmt(main_.result), result.verdict])
            lines.append(f"- {name}, cleaned by {method}: {words(main_)}.")
            if "repair" in result.comparisons:
                rep = result.comparisons["repair"]
                n_rep = f"{int(rep.labels.sum())} + {int((~rep.labels).sum())}"
                rows.append([name, f"repair control ({method})", n_rep, *fmt(rep.result), ""])
                lines.append(f"- {name}, repair control of {method}: {words(rep)}.")
            if result.residue:
                r = result.residue
                lines.append(
                    f"- {name}, {method}: its detector flags {100 * r['cleaned_mean']:.3f}% of "
                    f"the cleaned scans' pixels ({r['cleaned_scans_above_0.1pct']} scans above "
                    f"0.1%) and {100 * r['reference_mean']:.3f}% of REFERENCE's "
                    f"({r['reference_scans_above_0.1pct']} above 0.1%)."
                )
            if result.failed:
                lines.append(f"- {name}, {method}: {len(result.failed)} unreadable files.")
            header = ["set", "comparison", "n", "AUC", "95% interval", "p", "verdict"]
            print(markdown_table(header, rows[first_row:]), flush=True)
    table = markdown_table(["set", "comparison", "n", "AUC", "95% interval", "p", "verdict"], rows)
    total = time.perf_counter() - started
    print(table)
    print("\n".join(lines))
    print("\n".join(timing))
    print(f"total {total / 60:.1f} min; reports under {work}")
    if args.record:
        body = (
            f"Code: {code_state()}. "
            f"{args.permutations} permutations, {args.bootstrap} bootstrap replicates, 5 "
            f"grouped folds, probe input 256x256, seed 0; total {total / 60:.1f} min "
            f"({'; '.join(timing)}).\n\n{table}\nWhere the evidence lies (from the "
            f"heatmaps: the 3x3 regions holding most of the first set's excess, and the "
            f"maps whose bins carry most of the score difference):\n\n" + "\n".join(lines)
        )
        append_results("Audit: can a probe tell cleaned scans from clean ones? (issue 18)", body)


if __name__ == "__main__":
    main()
