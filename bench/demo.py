"""Run the demo (what `make demo` runs), time it, and record its eval table.

python bench/demo.py [--minutes 2] [--out /tmp/demo-bench]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_results, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/demo-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    exe = Path(sys.executable).parent / "annot-denoise"
    started = time.perf_counter()
    # The whole command, start-up and imports included: what a user waits for.
    subprocess.run(
        [str(exe), "demo", "-o", str(args.out), "--minutes", str(args.minutes), "--no-progress"],
        check=True,
    )
    wall = time.perf_counter() - started

    import json

    from annot_denoise.demo import SIZE

    report = json.loads((args.out / "eval" / "report.json").read_text())
    rows = [
        [
            name,
            f"{m['psnr']:.2f}",
            f"{m['ssim']:.4f}",
            f"{m['psnr_mask']:.2f}",
            f"{m['change_outside']:.3f}",
        ]
        for name, m in report["metrics"].items()
    ]
    table = markdown_table(
        ["method", "PSNR dB", "SSIM", "PSNR in mask dB", "change outside mask+3px (8-bit levels)"],
        rows,
    )
    body = (
        f"Demo wall time (whole `annot-denoise demo` command, training budget "
        f"{args.minutes:g} min): **{wall:.0f} s**. Eval on {report['images']} held-out phantom "
        f"scans ({SIZE[1]}x{SIZE[0]}):\n\n{table}"
    )
    print(body)
    m = report["metrics"]
    headline = f"{wall:.0f} s; " + ", ".join(
        f"{name} {m[name]['psnr']:.2f} dB ({m[name]['psnr_mask']:.2f} in the marks)"
        for name in ("default", "telea")
        if name in m
    )
    append_results("Demo", body, headline=headline)


if __name__ == "__main__":
    main()
