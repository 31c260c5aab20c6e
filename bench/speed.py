"""Speed benchmark: clean throughput against the reference loop and the I/O ceiling,
where clean's time goes (decode, detect, inpaint, post-process, encode), training
throughput, how fast one core draws training pairs on the fly (and where that time
goes), the compute ceiling, and peak memory on a 4000x4000 scan.

    python bench/speed.py [--device auto] [--images 200] [--model PATH] [--out /tmp/speed-bench]

Everything runs in one process on one machine, on the same images: 960x540
phantom scans written as PNG. ``--model`` times a trained checkpoint; without it
an untrained network of the default architecture (`ModelConfig`'s defaults) is
timed; it detects nothing, so it skips the inpainting and runs faster than a
trained one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import append_results, machine, markdown_table, record_speedup  # noqa: E402


def _default_arch() -> dict:
    """The architecture `train` builds when a config names none (ModelConfig's defaults)."""
    from annot_denoise.config import ModelConfig

    cfg = ModelConfig()
    return {"name": cfg.arch, "kwargs": {"in_channels": 3, "width": cfg.width, "depth": cfg.depth}}


DEFAULT_ARCH = _default_arch()
REFERENCE_ARCH = {"name": "autoencoder", "kwargs": {"in_channels": 1, "width": 32, "depth": 4}}


def make_inputs(folder: Path, count: int) -> list[Path]:
    from annot_denoise.io import write_image
    from annot_denoise.phantom import make_phantom
    from annot_denoise.synth.pipeline import annotate, item_rng

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"scan_{i:04d}.png"
        if not path.exists():
            scan = make_phantom(540, 960, np.random.default_rng(i))
            _, annotated, _, _ = annotate(scan, "mixed", item_rng(0, path.name, 0))
            write_image(path, annotated)
        paths.append(path)
    return paths


def checkpoint_for(arch: dict, data: dict, path: Path) -> Path:
    """An untrained checkpoint of ``arch`` (speed does not depend on the weights)."""
    from annot_denoise.models import build_model
    from annot_denoise.training.checkpoint import save_checkpoint

    model = build_model(arch["name"], **arch["kwargs"])
    save_checkpoint(path, {"arch": arch, "data": data, "model": model.state_dict()})
    return path


def time_io_ceiling(paths: list[Path], out: Path, workers: int) -> float:
    """Decode + encode only (same reader, writer and threads as clean)."""
    from concurrent.futures import ThreadPoolExecutor

    from annot_denoise.io import read_image, write_image

    def one(p: Path) -> None:
        write_image(out / p.name, read_image(p))

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, paths))
    return time.perf_counter() - start


def time_clean(
    paths: list[Path],
    out: Path,
    ckpt: Path,
    device,
    batch: int,
    workers: int,
    streams: int | None = None,
    tta: bool = False,
    postprocess: str | None = None,
) -> tuple[float, dict]:
    """Seconds clean took, and its stages: {stage: {"wall_s", "cpu_s"}} plus the
    process's CPU seconds over the run (``"process_cpu_s"``)."""
    from annot_denoise.clean import clean
    from annot_denoise.config import CleanConfig
    from annot_denoise.inference import Restorer, with_steps
    from annot_denoise.training.checkpoint import load_model

    model, meta = load_model(ckpt, device)
    restorer = Restorer.from_checkpoint(model, meta, device, batch_size=batch, tta=tta)
    restorer.postprocess = with_steps(restorer.postprocess, postprocess)
    restorer.restore([np.zeros((540, 960), np.uint8)])  # warm-up (kernels, allocator)
    start, cpu = time.perf_counter(), time.process_time()
    report = clean(
        CleanConfig(
            inputs=paths[0].parent,
            out=out,
            batch_size=batch,
            workers=workers,
            streams=streams,
            overwrite=True,
        ),
        restorer,
    )
    seconds = time.perf_counter() - start
    assert report.ok, report.failed
    return seconds, {**report.stages, "process_cpu_s": time.process_time() - cpu}


STAGES = ("decode", "detect", "inpaint", "postprocess", "network", "encode")


def stage_table(stages: dict, images: int, seconds: float) -> str:
    """Where clean's time went: CPU and wall milliseconds per image in each stage,
    summed over the threads that ran it, and each stage's share of the process's CPU."""
    import os

    cpu = stages["process_cpu_s"]
    rows = []
    for name in [*STAGES, *sorted(set(stages) - {*STAGES, "process_cpu_s"})]:
        if name in stages:
            t = stages[name]
            rows.append([name, f"{1000 * t['cpu_s'] / images:.1f}", f"{t['cpu_s'] / cpu:.0%}",
                         f"{1000 * t['wall_s'] / images:.1f}"])  # fmt: skip
    rest = cpu - sum(v["cpu_s"] for k, v in stages.items() if k != "process_cpu_s")
    rows.append(["other (threads, Python, libraries' own threads)",
                 f"{1000 * rest / images:.1f}", f"{rest / cpu:.0%}", "-"])  # fmt: skip
    rows.append(["all (process CPU)", f"{1000 * cpu / images:.1f}", "100%",
                 f"{1000 * seconds / images:.1f} (elapsed)"])  # fmt: skip
    table = markdown_table(["stage", "CPU ms / image", "share of CPU", "wall ms / image"], rows)
    cores = os.cpu_count() or 1
    return table + (
        f"\nThe cores were busy {cpu / (seconds * cores):.0%} of the run ({cpu:.1f} CPU s over "
        f"{seconds:.1f} s on {cores} cores). Wall times are summed over the threads of a stage, "
        "which overlap.\n"
    )


def time_reference_loop(paths: list[Path], out: Path, ckpt: Path, device) -> float:
    """The thesis loop: one image at a time, PIL, grey, 336x544, autoencoder, resize back."""
    import torch
    from PIL import Image

    from annot_denoise.training.checkpoint import load_model

    model, _ = load_model(ckpt, device)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            img = Image.open(p).convert("L")
            size = img.size
            x = np.asarray(img.resize((544, 336), Image.BILINEAR), np.float32) / 255.0
            y = model(torch.from_numpy(x)[None, None].to(device))[0, 0].float().cpu().numpy()
            res = Image.fromarray((np.clip(y, 0, 1) * 255).astype(np.uint8)).resize(size)
            res.save(out / p.name)
    return time.perf_counter() - start


def time_drawing(folder: Path, samples: int, echo: int = 1) -> tuple[float, dict[str, float]]:
    """On-the-fly training pairs drawn by one core, as the default model's recipe draws
    them (256x256 patches of 960x540 scans, the interface kept with data.interface_focus
    0.25 as phase 7 draws it, the default colours), ``echo`` patches cut from each
    drawing: (patches per second, {stage: ms per drawing})."""
    import cv2
    import torch

    from annot_denoise.io import write_image
    from annot_denoise.phantom import make_phantom
    from annot_denoise.training.data import SyntheticDataset

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(8):
        path = folder / f"clean_{i}.png"
        if not path.exists():
            write_image(path, make_phantom(540, 960, np.random.default_rng(100 + i), color=True))
        paths.append(path)
    threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)  # what one DataLoader worker gets
    torch.set_num_threads(1)
    try:
        data = SyntheticDataset(
            paths, channels=3, size=None, patch=256, drawer="mixed",
            colors=("white", "yellow", "cyan", "green", "sampled"), scanner_ui="keep",
            interface_focus=0.25, repeats=max(1, -(-samples // len(paths))), echo=echo,
        )  # fmt: skip
        data[0]  # imports and caches outside the clock
        data.stages.reset()
        start = time.perf_counter()
        for i in range(samples):
            data[i]
        seconds = time.perf_counter() - start
    finally:
        cv2.setNumThreads(threads[0])
        torch.set_num_threads(threads[1])
    stages = {k: 1000 * v / samples for k, v in data.stages.wall.items()}
    return samples * echo / seconds, stages


def time_training(device, dtype, channels_last: bool, compile_: bool, steps: int) -> float:
    """Samples/s of the default architecture's training step at 256x256, batch 16."""
    import torch

    from annot_denoise.config import TrainConfig
    from annot_denoise.models import build_model, model_outputs
    from annot_denoise.runtime import autocast
    from annot_denoise.training.loop import objective

    torch.manual_seed(0)
    model = build_model(DEFAULT_ARCH["name"], **DEFAULT_ARCH["kwargs"]).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    step_model = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = TrainConfig()
    x = torch.rand(16, 3, 256, 256, device=device).contiguous(memory_format=fmt)
    y = x.clone()
    m = (torch.rand(16, 1, 256, 256, device=device) > 0.97).float()

    def step() -> None:
        with autocast(device, dtype):
            parts = model_outputs(step_model(x))
        loss = objective(parts, y, m, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3 if not compile_ else 5):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return 16 * steps / (time.perf_counter() - start)


def flops_per_image(height: int, width: int) -> float:
    """FLOPs of one full forward pass of the default architecture (both stages)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from annot_denoise.models import build_model

    model = build_model(DEFAULT_ARCH["name"], **DEFAULT_ARCH["kwargs"]).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, height, width))
    return float(counter.get_total_flops())


def flops_of_clean(ckpt: Path, paths: list[Path]) -> float:
    """Mean FLOPs `clean` spends per image on ``paths``, counted while it restores them.

    What clean runs is less than a full forward pass: the detector sees the whole
    scan, the inpainter only the boxes around what it found.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from annot_denoise.inference import Restorer
    from annot_denoise.io import read_image
    from annot_denoise.training.checkpoint import load_model

    cpu = torch.device("cpu")
    model, meta = load_model(ckpt, cpu)
    restorer = Restorer.from_checkpoint(model, meta, cpu)
    total = 0.0
    for p in paths:
        with FlopCounterMode(display=False) as counter:
            restorer.restore([read_image(p)])
        total += counter.get_total_flops()
    return total / len(paths)


def matmul_rate(device, dtype) -> float:
    """Dense matmul FLOP/s, the machine's compute ceiling for this dtype."""
    import torch

    n = 4096 if device.type == "cuda" else 1024
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 20 if device.type == "cuda" else 5
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def peak_memory_4000(ckpt: Path, device, folder: Path) -> str:
    """`clean` of one 4000x4000 PNG in a fresh process: its peak RSS (and GPU peak).

    The annotated scan is made here, so the child's peak is reading, cleaning and
    writing it, not generating the phantom.
    """
    from annot_denoise.io import write_image
    from annot_denoise.phantom import make_phantom
    from annot_denoise.synth.pipeline import annotate

    src = folder / "in"
    scan = make_phantom(4000, 4000, np.random.default_rng(0), color=True)
    # Marks at the scale of the 1000-px blocks they are drawn in (drawers scale them
    # with the image), all over the scan: the inpainting stage then works everywhere.
    for k in range(16):
        y, x = 1000 * (k // 4), 1000 * (k % 4)
        block = scan[y : y + 1000, x : x + 1000]
        block[:] = annotate(block, "mixed", np.random.default_rng(k))[1]
    write_image(src / "scan4000.png", scan)
    code = f"""
import json, resource, torch
from pathlib import Path
from annot_denoise.training.checkpoint import load_model
from annot_denoise.config import CleanConfig
from annot_denoise.clean import clean
from annot_denoise.inference import Restorer
dev = torch.device({str(device)!r})
model, meta = load_model({str(Path(ckpt).resolve())!r}, dev)
r = Restorer.from_checkpoint(model, meta, dev)
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
report = clean(CleanConfig(inputs=Path({str(src)!r}), out=Path({str(folder / "out")!r}),
                           overwrite=True), r)
assert report.ok, report.failed
gpu = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a big
# parent (this benchmark, holding its images) would report the parent's size.
try:
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    rss = int(status.split()[0]) / 1024
except (OSError, IndexError):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"rss_mb": rss, "gpu_mb": gpu}}))
"""
    # From the repository root, so the package imports whether or not it is installed.
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=HERE.parent
    )
    peak = json.loads(result.stdout.strip().splitlines()[-1])
    text = f"{peak['rss_mb']:.0f} MB peak RSS"
    if peak["gpu_mb"] is not None:
        text += f", {peak['gpu_mb']:.0f} MB max_memory_allocated on the GPU"
    return text


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--model", help="a shipped model's name or a checkpoint to time instead")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="also time clean with this model (a shipped name or a checkpoint); the summary "
        "line stays --model's",
    )
    parser.add_argument("--tta", action="store_true", help="also time --model with clean --tta")
    parser.add_argument(
        "--postprocess",
        action="append",
        default=[],
        metavar="STEPS",
        help="also time --model with clean --postprocess STEPS ('none', or step names "
        "separated by commas): what the post-processing steps cost",
    )
    parser.add_argument(
        "--batch", type=int, help="clean's --batch-size (default: clean's for the device)"
    )
    parser.add_argument("--workers", type=int, default=4, help="clean's read/write threads")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--draw-samples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("/tmp/speed-bench"))
    parser.add_argument("--results", type=Path, help="append there instead of bench/RESULTS.md")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    import torch

    from annot_denoise.pretrained import resolve_model
    from annot_denoise.runtime import amp_dtype, inference_batch, resolve_device

    device = resolve_device(args.device)
    args.batch = inference_batch(device, args.batch)
    out = args.out
    paths = make_inputs(out / "inputs", args.images)
    if args.model:
        ckpt = resolve_model(args.model)
    else:
        ckpt = checkpoint_for(DEFAULT_ARCH, {"channels": 3, "size": None}, out / "default-arch.pt")
    ref_ckpt = checkpoint_for(REFERENCE_ARCH, {"channels": 1, "size": [336, 544]}, out / "ref.pt")
    n, mpx = len(paths), len(paths) * 960 * 540 / 1e6

    t_io = time_io_ceiling(paths, out / "io", args.workers)
    t_ours, stages = time_clean(paths, out / "ours", ckpt, device, args.batch, args.workers)
    t_ref = time_reference_loop(paths, out / "ref", ref_ckpt, device)
    label = args.model or "untrained maskunet"
    also = []
    if device.type == "cpu":  # clean's default there is two streams; one, for comparison
        t, _ = time_clean(paths, out / "also", ckpt, device, args.batch, args.workers, streams=1)
        also.append([f"annot-denoise clean ({label}, --streams 1)", f"{n / t:.1f}",
                     f"{mpx / t:.1f}", f"{t_ref / t:.1f}x"])  # fmt: skip
    if args.tta:
        t, _ = time_clean(paths, out / "also", ckpt, device, args.batch, args.workers, tta=True)
        also.append([f"annot-denoise clean ({label}, --tta)", f"{n / t:.1f}",
                     f"{mpx / t:.1f}", f"{t_ref / t:.1f}x"])  # fmt: skip
    for steps in args.postprocess:
        t, _ = time_clean(
            paths, out / "also", ckpt, device, args.batch, args.workers, postprocess=steps
        )
        also.append([f"annot-denoise clean ({label}, --postprocess {steps})", f"{n / t:.1f}",
                     f"{mpx / t:.1f}", f"{t_ref / t:.1f}x"])  # fmt: skip
    for item in args.also:
        name, _, spec = item.partition("=")
        t, _ = time_clean(
            paths, out / "also", resolve_model(spec), device, args.batch, args.workers
        )
        also.append([f"annot-denoise clean ({name}, native 960x540)", f"{n / t:.1f}",
                     f"{mpx / t:.1f}", f"{t_ref / t:.1f}x"])  # fmt: skip
    rows = [
        ["decode + encode only (I/O ceiling)", f"{n / t_io:.1f}", f"{mpx / t_io:.1f}", "-"],
        [f"annot-denoise clean ({label}, native 960x540)",
         f"{n / t_ours:.1f}",
         f"{mpx / t_ours:.1f}", f"{t_ref / t_ours:.1f}x"],
        *also,
        ["reference loop (autoencoder at 336x544)", f"{n / t_ref:.1f}", f"{mpx / t_ref:.1f}",
         "1.0x"],
    ]  # fmt: skip
    clean_table = markdown_table(["pipeline", "images/s", "Mpx/s", "vs reference"], rows)
    stages_table = stage_table(stages, n, t_ours)

    dtype = amp_dtype(device, True)
    train_rows = [
        ["eager fp32", f"{time_training(device, None, False, False, args.train_steps):.0f}"]
    ]
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        train_rows.append(
            [
                f"{name} autocast + channels_last",
                f"{time_training(device, dtype, True, False, args.train_steps):.0f}",
            ]
        )
        if device.type == "cuda":
            train_rows.append(
                [
                    f"{name} autocast + channels_last + torch.compile",
                    f"{time_training(device, dtype, True, True, args.train_steps):.0f}",
                ]
            )
    train_table = markdown_table(["training step (256x256, batch 16)", "samples/s"], train_rows)
    drawn, draw_stages = time_drawing(args.out / "drawing", args.draw_samples)
    draw_table = markdown_table(
        ["drawing a training pair (one core)", "ms / sample"],
        [[stage, f"{ms:.1f}"] for stage, ms in draw_stages.items()]
        + [["all", f"{1000 / drawn:.1f}"]],
    )
    echoed = {
        k: time_drawing(args.out / "drawing", max(1, args.draw_samples // k), k)[0] for k in (2, 4)
    }
    echo_table = markdown_table(
        ["data.echo (patches per drawing)", "patches/s per core", "cores for 2,000 patches/s"],
        [[str(k), f"{rate:.0f}", f"{2000 / rate:.0f}"] for k, rate in {1: drawn, **echoed}.items()],
    )

    full = flops_per_image(540, 960)
    flops = flops_of_clean(ckpt, paths[:16])
    rate_dtype = dtype or torch.float32
    rate = matmul_rate(device, rate_dtype)
    ceiling = rate / flops
    fraction = (n / t_ours) / ceiling
    memory = peak_memory_4000(ckpt, device, args.out / "memory")

    body = (
        f"{n} phantom scans, 960x540 PNG in and out, device {device}, batch {args.batch}, "
        f"{args.workers} I/O threads.\n\n{clean_table}\n"
        f"Where the time of clean ({label}) went:\n\n{stages_table}\n{train_table}\n"
        f"{draw_table}\nOne core draws {drawn:.0f} training pairs/s on the fly (scan: "
        f"augmentation; interface: the scanner's; marks: the clinician's; patch: the "
        f"crop and tensors): 2,000 samples/s needs {2000 / drawn:.0f} cores drawing.\n\n"
        f"With data echoing (`data.echo`: patches cut from each drawing, at their own "
        f"places):\n\n{echo_table}\n"
        f"- compute ceiling: clean spent {flops / 1e9:.1f} GFLOP per 960x540 image (counted "
        f"on {min(16, n)} of them: the detector on the whole scan, the inpainter around "
        f"what it found; a full forward pass of the default architecture is "
        f"{full / 1e9:.1f}), dense {str(rate_dtype).removeprefix('torch.')} matmul at "
        f"{rate / 1e12:.2f} TFLOP/s "
        f"-> {ceiling:.0f} images/s; clean reaches {fraction:.1%} of it "
        f"(and {t_io / t_ours:.0%} of the I/O ceiling).\n"
        f"- clean of one 4000x4000 RGB scan: {memory}.\n"
    )
    print(body)
    print(f"clean speed-up over the reference loop: {t_ref / t_ours:.1f}x ({machine()})")
    if not args.no_record:
        where = {"path": args.results} if args.results else {}
        headline = (
            f"clean ({label}) {n / t_ours:.1f} images/s at 960x540 on {device}, "
            f"{t_ref / t_ours:.1f}x the reference loop, {fraction:.0%} of the compute ceiling"
        )
        append_results("Speed (issue 19)", body, headline=headline, **where)
        record_speedup(t_ref / t_ours, machine(), **where)


if __name__ == "__main__":
    main()
