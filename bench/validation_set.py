"""Write the VALIDATION set: the pairs on which inference rules are chosen (issue 17).

    python bench/validation_set.py --out data/validation [--real-us ../shared/data/real-us]
    python bench/validation_set.py --out data/validation-noui --scanner-ui off
    python bench/validation_set.py --out data/validation-qlike --quality-like

Never the test scans of bench/quality.py: a rule chosen on the scans it is then
scored on is scored on its own training data. The output is a synth-style folder
(``clean/``, ``annotated/``, ``masks/``, ``manifest.jsonl``, ``synth.json``: what
``annot-denoise synth`` writes, written by the same function) with two parts, told
apart by the first folder of every pair's name:

- ``phantoms/``: 36 procedural scans from :func:`annot_denoise.phantom.write_phantoms`
  with ``varied`` sizes (240-1200 px a side, a third of them RGB): 24 plain
  (``phantoms/plain``, seed 1717) and 12 with scanner read-outs beside the field
  of view (``phantoms/vendor``, seed 1718), UI that a rule must leave alone.
  Scan i of seed S comes from ``SeedSequence([S, i])``, so scans of different
  seeds are independent draws. The seeds already taken: 0 (the 600 training
  phantoms of the shipped models, docs/default-model.md; the demo's training
  scans; bench/quality.py's training scans), 1 (the demo's test scans and its
  annotations), 10_000 (bench/quality.py's test scans; its annotations use synth
  seeds 1 and 2), 777 (the validation scans on which the current rules were
  tuned, docs/default-model.md: a fresh set says whether they hold beyond the
  scans they were fitted to), 9090 (the clean-phantom check) and the small seeds
  of tests/. 1717 and 1718 are none of these.
- ``real/``: real clean scans from ``--real-us`` (``manifest.csv`` and ``clean/``;
  see README.md there) at native resolution. These files are never committed:
  without them (every test, a fresh checkout) the script says so in one line and
  writes the phantom part only.

Both parts are annotated by ``synth`` with the ``mixed`` drawer (every built-in
style) in white, yellow, cyan, green and sampled colours (pale and desaturated
hues too), one copy per scan, annotation seed 1717 (grey scans become RGB, as
synth does whenever a colour may be drawn), with a synthetic scanner interface
burned into both images of every pair (``scanner_ui="keep"``): it is never in
the mask, so a model or a step that erases it loses PSNR, as on real screens.
``--scanner-ui off`` writes the same scans with the same marks and no interface
(``data/validation-noui``): what a choice does to scans cropped to the image area,
as most real exports are (marks that the interface pushed aside may sit elsewhere).
``--quality-like`` writes instead what bench/quality.py's "seen styles" test set is
made of, from other seeds: 30 phantoms of its generator and test sizes (scan seed
20_000), marked by its drawer (every style but arrows, its four colours, seed 3),
no interface; the set on which a choice that the phantom bench will report is made.
The clean inputs it read are kept under ``sources/`` (phantoms as written, real
files as byte copies). The same options give the same bytes.

**The real split.** The 182 clean real scans are split once, by file name, into
a validation part (about 30%, 55 scans; this set) and a test part (the other
127, for a future test set that no rule has seen). Half would be 91 validation
scans; the ablation must run in minutes on 2 CPU cores, and a test set gains
more from the extra scans than a rule choice does. The split is stratified by
collection (hc18 fetal heads, the lung POCUS stills and frames of ``pocus`` and
``pocusframe`` together, usgra nerve blocks, cca carotids, itkpocus): in each,
30% of its files, rounded to the nearest whole. Frames of one recording stay on
one side: a file's group is its name without the collection prefix and without a
trailing clip or frame number (``set4_img2`` and ``set4_vid1`` are both
``set4``; ``_v3``, ``-2``, ``_Video_001`` likewise), and within a collection the
groups are taken in the order of the SHA-256 of collection and group until the
share is reached. ``split.json`` in the output lists both parts (``validation``
and ``test``, paths relative to ``--real-us``); the test part is every clean
file of ``manifest.csv`` not in the validation part, and ``split_real`` here
computes both from the manifest alone.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PHANTOM_SETS = (("plain", 24, 1717, False), ("vendor", 12, 1718, True))  # name, count, seed, text
ANNOTATION_SEED = 1717
# --quality-like: bench/quality.py takes scans of seeds 0 and 10_000, marks of 1 and 2.
QUALITY_LIKE = (30, 20_000, 3)  # scans, scan seed, annotation seed
COLORS = ("white", "yellow", "cyan", "green", "sampled")
VALIDATION_SHARE = 0.3
# Collections that are one source under two names (the same lung POCUS recordings).
COLLECTIONS = {"pocusframe": "pocus"}
# A trailing clip or frame number: _img2, _vid1, _v3, _mov6, _Image001, _Video_001, -2.
_FRAME = re.compile(r"[_-](?:img|vid|v|mov|image|video_?)?\d+$", re.IGNORECASE)
# What this script writes under --out (and --overwrite removes first).
OUTPUTS = ("clean", "annotated", "masks", "sources", "manifest.jsonl", "synth.json", "split.json")


def collection(name: str) -> str:
    """The collection of a real-us file name (``<source-short>__<stem>.<ext>``)."""
    short = Path(name).name.split("__", 1)[0]
    return COLLECTIONS.get(short, short)


def group(name: str) -> str:
    """The recording a real-us file comes from: frames of one clip share a group."""
    stem = Path(name).stem
    stem = stem.split("__", 1)[1] if "__" in stem else stem
    return f"{collection(name)}/{_FRAME.sub('', stem)}"


def split_real(files: Sequence[str], share: float = VALIDATION_SHARE) -> dict[str, list[str]]:
    """``{"validation": [...], "test": [...]}``: each collection's groups in hash order,
    taken until ``share`` of its files (rounded to the nearest whole) is reached."""
    by_collection: dict[str, dict[str, list[str]]] = {}
    for name in sorted(files):
        by_collection.setdefault(collection(name), {}).setdefault(group(name), []).append(name)
    validation: list[str] = []
    for groups in by_collection.values():
        target = int(share * sum(len(v) for v in groups.values()) + 0.5)
        taken = 0
        for key in sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest()):
            if taken >= target:
                break
            validation += groups[key]
            taken += len(groups[key])
    chosen = set(validation)
    return {
        "validation": sorted(validation),
        "test": sorted(name for name in files if name not in chosen),
    }


def read_manifest(real_us: Path) -> list[str]:
    """The clean files of real-us's manifest.csv, relative to ``real_us``."""
    with (real_us / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return sorted(row["file"] for row in csv.DictReader(fh) if row["set"] == "clean")


def stage_phantoms(sources: Path, workers: int) -> int:
    from annot_denoise.phantom import write_phantoms

    for name, count, seed, text in PHANTOM_SETS:
        write_phantoms(
            sources / "phantoms" / name,
            count,
            seed=seed,
            varied=True,
            vendor_text=text,
            workers=workers,
        )
    return sum(count for _, count, _, _ in PHANTOM_SETS)


def stage_real(sources: Path, real_us: Path, files: Sequence[str]) -> None:
    target = sources / "real"
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copyfile(real_us / name, target / Path(name).name)


def annotate(sources: Path, out: Path, record: dict, workers: int, **options):
    """Draw the marks on ``sources`` into ``out`` with synth and write split.json."""
    from annot_denoise.synth.pipeline import synth

    report = synth(sources, out, workers=workers, **options)
    if not report.ok:
        sys.exit("synth failed:\n" + "\n".join(report.failed))
    (out / "split.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return report


def write_quality_like(out: Path, workers: int) -> None:
    """Pairs drawn as bench/quality.py draws its "seen styles" test set, other seeds."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import heldout
    from quality import TEST_SIZES, make_scans

    count, scan_seed, seed = QUALITY_LIKE
    sources = make_scans(out / "sources", count, TEST_SIZES, seed=scan_seed)
    record = {"quality_like": {"scans": count, "scan_seed": scan_seed, "annotation_seed": seed}}
    annotate(
        sources,
        out,
        record,
        workers,
        drawer="heldout:draw_seen",
        seed=seed,
        colors=list(heldout.COLORS),
        scanner_ui="off",
    )


def clear_outputs(out: Path, overwrite: bool) -> None:
    """Refuse a folder with anything in it unless ``overwrite``; then remove only what
    this script writes, so no pair of an earlier, larger run survives."""
    if not out.exists():
        return
    if not out.is_dir():
        sys.exit(f"--out {out}: is a file, not a folder")
    present = sorted(p.name for p in out.iterdir())
    if present and not overwrite:
        sys.exit(f"--out {out}: not empty ({', '.join(present[:5])}); add --overwrite")
    unknown = [name for name in present if name not in OUTPUTS]
    if unknown:
        sys.exit(f"--out {out}: holds files this script did not write ({', '.join(unknown[:5])})")
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("data/validation"))
    parser.add_argument(
        "--real-us",
        type=Path,
        default=Path("../shared/data/real-us"),
        help="folder with manifest.csv and clean/ (relative to the project root)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes (same bytes whatever)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's files")
    parser.add_argument(
        "--scanner-ui",
        choices=("keep", "off"),
        default="keep",
        help="off: no synthetic interface, the same scans and marks otherwise (the set on "
        "which a scan without an interface is checked)",
    )
    parser.add_argument(
        "--quality-like",
        action="store_true",
        help="phantoms and marks drawn as bench/quality.py draws its test set, other seeds "
        "(no interface and no real scans: --scanner-ui and --real-us do not apply)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    clear_outputs(args.out, args.overwrite)
    if args.quality_like:
        write_quality_like(args.out, args.workers)
        print(f"{args.out}: {QUALITY_LIKE[0]} pairs in {time.perf_counter() - started:.0f} s")
        return
    sources = args.out / "sources"
    phantoms = stage_phantoms(sources, args.workers)
    split: dict[str, list[str]] = {"validation": [], "test": []}
    if (args.real_us / "manifest.csv").is_file():
        split = split_real(read_manifest(args.real_us))
        stage_real(sources, args.real_us, split["validation"])
    else:
        print(f"no real scans: {args.real_us / 'manifest.csv'} not found; phantoms only")
    record = {
        "real_us": args.real_us.as_posix() if split["validation"] else None,
        "validation_share": VALIDATION_SHARE,
        "phantoms": [
            {"folder": f"phantoms/{name}", "count": count, "seed": seed, "vendor_text": text}
            for name, count, seed, text in PHANTOM_SETS
        ],
        "annotation_seed": ANNOTATION_SEED,
        "scanner_ui": args.scanner_ui,
        **split,
    }
    report = annotate(
        sources,
        args.out,
        record,
        args.workers,
        drawer="mixed",
        seed=ANNOTATION_SEED,
        colors=COLORS,
        scanner_ui=args.scanner_ui,
    )
    real = len(split["validation"])
    print(
        f"{args.out}: {report.written} pairs ({phantoms} phantoms, {real} real; "
        f"{len(split['test'])} real scans left for a test set) in "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
