"""Stage the clean scans the shipped default model learns from (issue 16).

    python examples/real_backgrounds.py --out data/default-real [--real-us ../shared/data/real-us]

Two parts under ``--out``, one folder for ``data.clean_dir``:

- ``real/``: every clean scan of ``real-us/manifest.csv`` whose licence allows any
  use (CC BY 4.0, Apache-2.0) and that is **not** in the validation part of
  ``bench/validation_set.py``'s split (the scans inference settings are chosen on),
  copied byte for byte. Scans under non-commercial licences are never copied: the
  shipped weights may not learn from them. They and the validation part are what
  the model is measured on.
- ``phantoms/``: ``--phantoms`` procedural scans (seed 0, varied sizes, a third
  RGB): the backgrounds the earlier phases learned from, so the model keeps them.

``sources.csv`` lists every real file copied with its licence and source, and
``held_out.csv`` the real scans that were not (validation, or a licence that
forbids training), with the reason. Without ``--real-us`` the script says so and
stops: the real part is the point.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPABLE = ("CC BY 4.0", "Apache-2.0")  # licence prefixes that allow any use


def _validation_split():
    """bench/validation_set.py's ``split_real`` and ``read_manifest``, by path."""
    spec = importlib.util.spec_from_file_location(
        "validation_set", ROOT / "bench" / "validation_set.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.split_real, module.read_manifest


def shippable(licence: str) -> bool:
    return licence.startswith(SHIPPABLE) and "NC" not in licence.split("(")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/default-real"))
    parser.add_argument("--real-us", type=Path, default=ROOT.parent / "shared/data/real-us")
    parser.add_argument("--phantoms", type=int, default=240)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (args.real_us / "manifest.csv").is_file():
        sys.exit(f"{args.real_us}: no manifest.csv (the real scans are not here); nothing staged")
    split_real, read_manifest = _validation_split()
    validation = set(split_real(read_manifest(args.real_us))["validation"])
    with (args.real_us / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["set"] == "clean"]
    copied, held = [], []
    for row in rows:
        name = row["file"]
        if name in validation:
            held.append({"file": name, "reason": "validation (bench/validation_set.py)"})
        elif not shippable(row["licence"]):
            held.append({"file": name, "reason": f"licence: {row['licence']}"})
        else:
            src, dst = args.real_us / name, args.out / "real" / Path(name).name
            data = src.read_bytes()
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                sys.exit(f"{src}: its bytes differ from manifest.csv's sha256; not staged")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            copied.append({"file": name, "licence": row["licence"], "source": row["source_repo"]})
    for table, rows_out in (("sources.csv", copied), ("held_out.csv", held)):
        with (args.out / table).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows_out[0]))
            writer.writeheader()
            writer.writerows(rows_out)
    sys.path.insert(0, str(ROOT))
    from annot_denoise.phantom import write_phantoms

    write_phantoms(args.out / "phantoms", args.phantoms, seed=0, varied=True, workers=args.workers)
    print(
        f"{args.out}: {len(copied)} real scans (licences allowing any use, none from the "
        f"validation split), {len(held)} held out, {args.phantoms} phantoms"
    )


if __name__ == "__main__":
    main()
