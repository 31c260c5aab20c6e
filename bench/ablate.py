"""Ablation of the post-processing steps on the validation set (issue 17, item 3).

    python bench/ablate.py [--data data/validation] [--model default] [--out data/ablation.json]
                           [--record]

One model, one run, one machine, the pairs of bench/validation_set.py (never the
test scans of bench/quality.py). The pipeline is scored with every step on
(``all``: ``DEFAULT_STEPS``), with none (``none``) and with each step removed in
turn (``-STEP``), per part of the set (the first folder of a pair's name:
``phantoms``, ``real``) and over all pairs together.

Per configuration, as ``annot-denoise eval`` scores (annot_denoise/evaluation/evaluate.py):
PSNR over the whole image and inside the true mask on float RGB in [0, 1], an
exact image counted as ``PSNR_CAP`` (100 dB) and an image without marks left out
of the in-mask mean; the mean change outside the true mask grown by
``OUTSIDE_MARGIN`` (3) px, in 8-bit grey levels; and the collateral damage:
*anatomy changed*, the pixels outside the true mask grown by 3 px (anatomy: the
marks changed nothing there, so the input is the truth) that the output changes
by more than 2 grey levels in some channel, as a count and a share of the anatomy.

Per step, comparing ``all`` (step on) with ``-STEP`` (step off), pixel by pixel:
a pixel's error is the largest absolute difference from the clean scan over its
channels, in 8-bit levels (16-bit scans: /257).

- delta dB: the mean PSNR with the step on minus with it off (whole image, in mask);
- *saved*: pixels inside the true mask whose error drops by more than 2 levels
  with the step on, minus those whose error rises by more than 2 (net);
- *anatomy changed*: anatomy pixels whose error rises by more than 2 levels with
  the step on, minus those whose error drops by more than 2 (net: a step that
  undoes false detections spares anatomy and scores below zero). The 3-px
  fringe around the marks counts on neither side, as in eval.

The issue's rule, "a step that gains less than 0.1 dB (whole image or inside the
marks) or changes more anatomy pixels than it saves is deleted", read as: a step
is kept when it gains at least 0.1 dB over the whole image or inside the marks
(either suffices) AND saves at least as many pixels as it changes in the anatomy;
otherwise it is deleted. The verdict is taken over all pairs (phantoms and real
together, each image counting once); the parts' deltas are shown beside it. The
steps are removed one at a time from the full pipeline, so a step that only
matters when another is absent reads as useless here.

The network's work is the same in every configuration wherever the steps before
it leave its input unchanged: the model's ``detect`` and ``inpaint`` are memoised
by the bytes of their inputs, per batch of scans (``--no-cache`` turns this off;
on the first batch the cached outputs are checked against fresh ones). The table
is printed, the raw numbers (per image too) are written to ``--out``, and with
``--record`` a dated entry goes into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, command, machine, markdown_table  # noqa: E402

TOLERANCE = 2.0  # 8-bit grey levels: smaller differences are neither saved nor damage
MIN_GAIN_DB = 0.1
ALL, NONE = "all", "none"
EVERY = "all steps (vs none)"
SECTION = "## Ablation: post-processing steps on the validation set (issue 17)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/validation"))
    parser.add_argument("--model", default="default", help="a shipped model's name or a .pt")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("data/ablation.json"))
    parser.add_argument("--batch", type=int, default=4, help="scans restored together")
    parser.add_argument("--limit", type=int, help="only the first N pairs (a quick check)")
    parser.add_argument("--no-cache", action="store_true", help="run the network every time")
    parser.add_argument("--record", action="store_true", help="add a dated entry to RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--batch and --limit must be at least 1")
    if args.record and args.limit is not None:
        parser.error("--record needs the whole set: drop --limit")
    return args


def configurations(steps: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``all``, ``none`` and ``-STEP`` for each step: name -> the steps that run."""
    configs = {ALL: tuple(steps), NONE: ()}
    for step in steps:
        configs[f"-{step}"] = tuple(s for s in steps if s != step)
    return configs


def part_of(name: str) -> str:
    """The part of the set a pair belongs to: the first folder of its name."""
    return name.split("/", 1)[0] if "/" in name else "scans"


# ---------------------------------------------------------------------- scoring


def regions(mask: np.ndarray, margin: int) -> np.ndarray:
    """The anatomy: everything outside the true mask grown by ``margin`` px."""
    k = 2 * margin + 1
    return ~cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)


def error_levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """HxW: the largest absolute difference over the colour channels, in 8-bit levels."""
    from annot_denoise.io import to_rgb

    a, b = to_rgb(a), to_rgb(b)
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32)).max(axis=2).astype(np.float32)
    return diff / 257.0 if a.dtype == np.uint16 else diff


def image_scores(
    output: np.ndarray,
    clean: np.ndarray,
    annotated: np.ndarray,
    mask: np.ndarray,
    anatomy: np.ndarray,
) -> tuple[dict, np.ndarray]:
    """One output's numbers, and its error map (for the step comparisons)."""
    from annot_denoise.evaluation.metrics import mean_abs_change, psnr
    from annot_denoise.io import to_float, to_rgb

    out, ref, inp = (to_float(to_rgb(x)) for x in (output, clean, annotated))
    changed = error_levels(output, annotated)[anatomy]
    scores = {
        "psnr": psnr(out, ref),
        "psnr_mask": psnr(out, ref, mask),
        "change_outside": mean_abs_change(out, inp, anatomy),
        "anatomy_changed": int(np.count_nonzero(changed > TOLERANCE)),
        "anatomy_touched": int(np.count_nonzero(changed > 0)),
        "anatomy_pixels": int(changed.size),
        "mask_pixels": int(np.count_nonzero(mask)),
    }
    return scores, error_levels(output, clean)


def step_counts(
    err_on: np.ndarray, err_off: np.ndarray, mask: np.ndarray, anatomy: np.ndarray
) -> dict[str, int]:
    """Pixels whose error drops (better) or rises (worse) by more than TOLERANCE
    when the step is on, inside the true mask and in the anatomy."""
    gain = err_off - err_on
    better, worse = gain > TOLERANCE, gain < -TOLERANCE
    return {
        "mask_better": int(np.count_nonzero(better & mask)),
        "mask_worse": int(np.count_nonzero(worse & mask)),
        "anatomy_better": int(np.count_nonzero(better & anatomy)),
        "anatomy_worse": int(np.count_nonzero(worse & anatomy)),
    }


def mean_db(values: Sequence[float]) -> float:
    """As eval averages PSNR: +inf counts as PSNR_CAP, NaN (nothing to measure) is left out."""
    from annot_denoise.evaluation.metrics import PSNR_CAP

    finite = [min(v, PSNR_CAP) for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarise(rows: list[dict], parts: Sequence[str]) -> dict[str, dict[str, dict]]:
    """config -> part -> means and totals over that part's images (``all``: every image)."""
    summary: dict[str, dict[str, dict]] = {}
    for config in dict.fromkeys(r["config"] for r in rows):
        summary[config] = {}
        for part in (*parts, ALL):
            mine = [r for r in rows if r["config"] == config and part in (ALL, r["part"])]
            if not mine:
                continue
            changed = sum(r["anatomy_changed"] for r in mine)
            anatomy = sum(r["anatomy_pixels"] for r in mine)
            summary[config][part] = {
                "images": len(mine),
                "psnr": mean_db([r["psnr"] for r in mine]),
                "psnr_mask": mean_db([r["psnr_mask"] for r in mine]),
                "change_outside": float(np.nanmean([r["change_outside"] for r in mine])),
                "anatomy_changed": changed,
                "anatomy_share": changed / anatomy if anatomy else math.nan,
            }
    return summary


def verdict(d_psnr: float, d_mask: float, saved: int, damaged: int) -> tuple[bool, str]:
    """The issue's rule (see the module's docstring): (keep, reason)."""
    gains = (d_psnr >= MIN_GAIN_DB) or (d_mask >= MIN_GAIN_DB)
    if not gains and damaged > saved:
        return False, f"delete: < {MIN_GAIN_DB:g} dB, changes more than it saves"
    if not gains:
        return False, f"delete: < {MIN_GAIN_DB:g} dB"
    if damaged > saved:
        return False, "delete: changes more than it saves"
    return True, "keep"


def step_effects(
    summary: dict, step_rows: list[dict], steps: Sequence[str], parts: Sequence[str]
) -> dict[str, dict]:
    """step -> part -> deltas and net pixel counts, plus the verdict over all images."""
    effects: dict[str, dict] = {}
    pairs = [(step, f"-{step}") for step in steps] + [(EVERY, NONE)]
    for step, off in pairs:
        if off not in summary:
            continue
        effects[step] = {}
        for part in (*parts, ALL):
            if part not in summary[ALL]:
                continue
            on_, off_ = summary[ALL][part], summary[off][part]
            mine = [r for r in step_rows if r["off"] == off and part in (ALL, r["part"])]
            totals = {
                k: sum(r[k] for r in mine)
                for k in ("mask_better", "mask_worse", "anatomy_better", "anatomy_worse")
            }
            effects[step][part] = {
                "d_psnr": on_["psnr"] - off_["psnr"],
                "d_psnr_mask": on_["psnr_mask"] - off_["psnr_mask"],
                "saved": totals["mask_better"] - totals["mask_worse"],
                "anatomy_changed": totals["anatomy_worse"] - totals["anatomy_better"],
                "images_changed": sum(not r["identical"] for r in mine),
                "images": len(mine),
                **totals,
            }
        whole = effects[step][ALL]
        keep, reason = verdict(
            whole["d_psnr"], whole["d_psnr_mask"], whole["saved"], whole["anatomy_changed"]
        )
        effects[step][ALL] |= {"keep": keep, "verdict": reason}
    return effects


# ---------------------------------------------------------------------- tables


def _by_part(values: dict, key: str, parts: Sequence[str], fmt: str) -> str:
    return " / ".join(format(values[p][key], fmt) if p in values else "-" for p in parts)


def tables(summary: dict, effects: dict, parts: Sequence[str]) -> tuple[str, str]:
    """(configurations table, steps table), markdown."""
    shown = [p for p in (*parts, ALL) if p in summary[ALL]]
    label = " / ".join(shown)
    rows = []
    for config, by_part in summary.items():
        whole = by_part[ALL]
        rows.append([
            config,
            _by_part(by_part, "psnr", shown, ".2f"),
            _by_part(by_part, "psnr_mask", shown, ".2f"),
            f"{whole['anatomy_changed']} ({whole['anatomy_share']:.4%})",
            f"{whole['change_outside']:.4f}",
        ])  # fmt: skip
    configs = markdown_table(
        ["configuration", f"PSNR dB ({label})", f"PSNR in mask dB ({label})",
         "anatomy changed px (share), all", "change outside mask+3px, all"], rows,
    )  # fmt: skip
    rows = []
    for step, by_part in effects.items():
        whole = by_part[ALL]
        rows.append([
            step,
            _by_part(by_part, "d_psnr", shown, "+.3f"),
            _by_part(by_part, "d_psnr_mask", shown, "+.3f"),
            f"{whole['anatomy_changed']} vs {whole['saved']}",
            f"{whole['images_changed']} of {whole['images']}",
            whole["verdict"],
        ])  # fmt: skip
    steps = markdown_table(
        ["step", f"delta PSNR dB ({label})", f"delta in mask dB ({label})",
         "anatomy changed vs saved px, all", "scans it changes", "verdict"], rows,
    )  # fmt: skip
    return configs, steps


def short_table(effects: dict) -> str:
    rows = [
        [step, f"{e[ALL]['d_psnr']:+.3f}", f"{e[ALL]['d_psnr_mask']:+.3f}",
         f"{e[ALL]['anatomy_changed']} vs {e[ALL]['saved']}", e[ALL]["verdict"]]
        for step, e in effects.items()
    ]  # fmt: skip
    return markdown_table(
        ["step", "delta PSNR dB", "delta in mask dB", "anatomy changed vs saved px", "verdict"],
        rows,
    )


def insert_entry(text: str, latest: str, entry: str) -> str:
    """``text`` (RESULTS.md) with the ablation section's latest block replaced by
    ``latest`` and ``entry`` added to the end of its history. A new section goes
    where append_results puts sections: before the one-line-per-machine ``## Speed``."""
    start = text.find(f"\n{SECTION}\n")
    if start < 0:
        block = f"\n{SECTION}\n\n{latest.rstrip()}\n\n{entry.rstrip()}\n"
        at = text.find("\n## Speed\n")
        if at < 0:
            return text.rstrip("\n") + "\n" + block
        return text[:at].rstrip("\n") + "\n" + block + text[at:]
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end
    section = text[start:end]
    history = section.find("\n### ")
    history = section[history:].strip("\n") if history >= 0 else ""
    block = f"\n{SECTION}\n\n{latest.rstrip()}\n\n" + (history + "\n\n" if history else "")
    block += entry.rstrip() + "\n"
    return text[:start] + block + text[end:]


# ---------------------------------------------------------------------- running


class NetworkCache:
    """Memoises a two-stage model's ``detect`` and ``inpaint`` by the bytes of their
    arguments. Outputs are copied in and out: callers may edit what they get."""

    def __init__(self, model) -> None:
        self.store: dict[tuple, object] = {}
        self.enabled = True
        self.calls = self.hits = 0
        for name in ("detect", "inpaint"):
            if hasattr(model, name):
                setattr(model, name, self._wrap(name, getattr(model, name)))

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def cached(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            self.calls += 1
            key = (name, _digest(args), _digest(tuple(sorted(kwargs.items()))))
            if key in self.store:
                self.hits += 1
            else:
                self.store[key] = _copy(fn(*args, **kwargs))
            return _copy(self.store[key])

        return cached

    def clear(self) -> None:
        self.store.clear()


def _digest(values: tuple) -> str:
    import torch

    h = hashlib.blake2b(digest_size=16)
    for value in values:
        if isinstance(value, tuple):
            h.update(_digest(value).encode())
        elif isinstance(value, torch.Tensor):
            h.update(f"{tuple(value.shape)} {value.dtype} {value.device}".encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def _copy(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_copy(v) for v in value)
    return value


def restore_all(pairs, restorers: dict, cache: NetworkCache | None, batch: int, log=print):
    """Restore every pair with every configuration; per-image rows and step rows."""
    from annot_denoise.evaluation.evaluate import OUTSIDE_MARGIN
    from annot_denoise.training.data import read_pair

    rows, step_rows, seconds = [], [], dict.fromkeys(restorers, 0.0)
    started = time.perf_counter()
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        loaded = [(pair, *read_pair(pair)) for pair in chunk]
        annotated = [annot for _, annot, _, _ in loaded]
        anatomy = [regions(mask, OUTSIDE_MARGIN) for _, _, _, mask in loaded]
        on: list[tuple[np.ndarray, np.ndarray]] = []
        for config, restorer in restorers.items():
            t = time.perf_counter()
            outputs = [r.image for r in restorer.restore(annotated)]
            seconds[config] += time.perf_counter() - t
            if cache is not None and start == 0 and config == ALL:
                _check_cache(restorer, annotated, outputs, cache)
            for i, (pair, annot, clean, mask) in enumerate(loaded):
                scores, err = image_scores(outputs[i], clean, annot, mask, anatomy[i])
                part = part_of(pair.name)
                rows.append({"image": pair.name, "part": part, "config": config, **scores})
                if config == ALL:
                    on.append((outputs[i], err))
                else:
                    step_rows.append({
                        "image": pair.name, "part": part, "off": config,
                        "identical": bool(np.array_equal(outputs[i], on[i][0])),
                        **step_counts(on[i][1], err, mask, anatomy[i]),
                    })  # fmt: skip
        if cache is not None:
            cache.clear()
        done = start + len(chunk)
        log(f"  {done}/{len(pairs)} scans, {time.perf_counter() - started:.0f} s")
    return rows, step_rows, seconds


def _check_cache(restorer, annotated, outputs, cache: NetworkCache) -> None:
    """The same batch again from the cache must give the same bytes."""
    counts = cache.calls, cache.hits
    again = [r.image for r in restorer.restore(annotated)]
    hit = cache.hits > counts[1]
    cache.calls, cache.hits = counts  # the check is not part of the run
    if not all(np.array_equal(a, b) for a, b in zip(outputs, again)):
        sys.exit("the network cache changed an output; rerun with --no-cache")
    if not hit:
        print("note: the network cache never hit (the model is not called through "
              "detect/inpaint); every configuration runs the network", file=sys.stderr)  # fmt: skip


def code_state() -> str:
    """The commit the run used, and whether annot_denoise/ differed from it."""

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", *argv], cwd=HERE.parent, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "annot_denoise")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes to annot_denoise/" if dirty else "")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        from annot_denoise.inference import DEFAULT_STEPS, PostprocessConfig, Restorer
    except ImportError as exc:
        sys.exit(f"bench/ablate.py needs the named post-processing steps (issue 17): {exc}")
    from annot_denoise.pretrained import resolve_model
    from annot_denoise.runtime import resolve_device
    from annot_denoise.training.checkpoint import load_model
    from annot_denoise.training.data import check_pairs, find_pairs

    started = time.perf_counter()
    code = code_state()
    pairs, failed = check_pairs(find_pairs(args.data))
    if failed:
        sys.exit("\n".join(failed))
    pairs = pairs[: args.limit] if args.limit else pairs
    parts = sorted({part_of(p.name) for p in pairs})
    device = resolve_device(args.device)
    model, ckpt = load_model(resolve_model(args.model), device)
    cache = None if args.no_cache else NetworkCache(model)
    configs = configurations(DEFAULT_STEPS)
    restorers = {
        name: Restorer.from_checkpoint(
            model, ckpt, device, postprocess=PostprocessConfig(steps=steps)
        )
        for name, steps in configs.items()
    }
    counts = ", ".join(f"{sum(part_of(p.name) == x for p in pairs)} {x}" for x in parts)
    print(f"{args.data}: {len(pairs)} pairs ({counts}); {len(configs)} configurations of "
          f"{len(DEFAULT_STEPS)} steps; model {args.model} on {device}", flush=True)  # fmt: skip
    rows, step_rows, seconds = restore_all(
        pairs, restorers, cache, args.batch, log=lambda line: print(line, flush=True)
    )
    summary = summarise(rows, parts)
    effects = step_effects(summary, step_rows, DEFAULT_STEPS, parts)
    wall = time.perf_counter() - started
    config_table, step_table = tables(summary, effects, parts)
    cached = (
        f"network calls served from the cache: {cache.hits} of {cache.calls}"
        if cache is not None
        else "no network cache"
    )
    intro = (
        f"{len(pairs)} validation pairs of `{args.data}` ({counts}), model `{args.model}` "
        f"on {device}, {len(configs)} configurations in {wall:.0f} s ({cached}). "
        f"Deltas are step on minus step off; saved and anatomy changed are net pixel "
        f"counts (error change > {TOLERANCE:g} grey levels), over all pairs; the "
        f"definitions are in bench/ablate.py."
    )
    body = f"{intro}\n\n{config_table}\n{step_table}"
    print(f"\n{body}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "data": str(args.data),
        "model": args.model,
        "device": str(device),
        "machine": machine(),
        "command": command(),
        "code": code,
        "seconds": round(wall, 1),
        "seconds_by_config": {k: round(v, 1) for k, v in seconds.items()},
        "cache": {"calls": cache.calls, "hits": cache.hits} if cache is not None else None,
        "tolerance_levels": TOLERANCE,
        "min_gain_db": MIN_GAIN_DB,
        "steps": list(DEFAULT_STEPS),
        "configurations": {k: list(v) for k, v in configs.items()},
        "summary": summary,
        "effects": effects,
        "per_image": rows,
        "per_image_steps": step_rows,
    }
    # As eval's report.json: an exact image's PSNR is Infinity, no marks is NaN.
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"raw numbers: {args.out}")
    if args.record:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        latest = (
            f"Latest run ({stamp}; its full tables, command and machine are the last entry "
            f"below). Each step removed from the full pipeline in turn, over all "
            f"{len(pairs)} pairs ({counts}); keep = gains >= {MIN_GAIN_DB:g} dB (whole image "
            f"or in the marks) and saves at least the anatomy pixels it changes.\n\n"
            f"{short_table(effects)}"
        )
        entry = (
            f"### {stamp}\n\n- machine: {machine()}\n- command: `{command()}`\n"
            f"- code: {code}\n\n{body}"
        )
        path = Path(args.results)
        text = insert_entry(path.read_text(encoding="utf-8"), latest, entry)
        path.write_text(text, encoding="utf-8")
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
