"""The ``annot-denoise`` command line: thin Typer commands over the core functions.

Each command validates its arguments, calls one core function and renders what
comes back. Errors a user can fix become one red line and exit code 1 (2 for
usage and config errors), never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ClassVar, Optional

import typer
from rich.console import Console
from rich.table import Table

from annot_denoise import __version__
from annot_denoise.io import printable

app = typer.Typer(
    name="annot-denoise",
    help="Remove annotations burned into medical images (calipers, arrows, text, boxes) "
    "and leave every other pixel as it was.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console(markup=False)  # what it prints holds paths: "[b]" in a name is text
log = logging.getLogger("annot_denoise")

NoProgress = Annotated[
    bool, typer.Option("--no-progress", help="No progress bars (for batch jobs and logs).")
]
Device = Annotated[
    str,
    typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps."),
]


def _user_errors() -> dict[type, int]:
    """Exceptions that mean 'the user can fix this', with their exit codes."""
    from annot_denoise.clean import CleanError
    from annot_denoise.config import ConfigError
    from annot_denoise.evaluation.audit import AuditError
    from annot_denoise.guard import UnsafeOutputError
    from annot_denoise.io import ImageReadError
    from annot_denoise.runtime import DeviceError
    from annot_denoise.synth.pipeline import SynthError
    from annot_denoise.training.checkpoint import CheckpointError
    from annot_denoise.training.data import DatasetError
    from annot_denoise.training.loop import TrainingError
    from annot_denoise.training.rundir import RunFolderError

    return {
        ConfigError: 2,
        DeviceError: 2,
        CheckpointError: 1,
        CleanError: 1,
        AuditError: 1,
        DatasetError: 1,
        SynthError: 1,
        TrainingError: 1,
        RunFolderError: 1,
        ImageReadError: 1,
        UnsafeOutputError: 1,
        OSError: 1,  # a full disk, an output path that is a file, a folder we may not write
    }


def _message(exc: Exception) -> str:
    """What the user reads: an OS error as 'path: reason', anything else as it says."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def error_line(text: str) -> None:
    """One red 'error:' line per line of ``text``; names in it are shown, never obeyed
    (no markup, no terminal control characters)."""
    for line in text.splitlines() or [""]:
        console.print("[red]error:[/red] ", end="", soft_wrap=True)
        console.print(printable(line), markup=False, highlight=False, soft_wrap=True)


def friendly(fn: Callable) -> Callable:
    """Turn the user-fixable exceptions into one red line and an exit code; anything
    else is a bug, said in one line too (with --verbose, its traceback)."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except KeyboardInterrupt:
            console.print("[red]interrupted[/red]; run the same command again to resume")
            raise typer.Exit(130) from None
        except Exception as exc:
            for kind, code in _user_errors().items():
                if isinstance(exc, kind):
                    error_line(_message(exc))
                    raise typer.Exit(code) from None
            if log.isEnabledFor(logging.DEBUG):
                raise
            error_line(
                f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                " (a bug in annot-denoise: please report it; --verbose shows where it happened)"
            )
            raise typer.Exit(3) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"annot-denoise {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    version: Annotated[
        Optional[bool],  # noqa: UP045 - Typer needs Optional here on Python 3.10
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Remove annotations burned into medical images."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, handlers=[_LineHandler()], force=True)


class _LineHandler(logging.Handler):
    """One log record, one line (never wrapped: batch logs are grepped by file name)."""

    PREFIX: ClassVar[dict[int, str]] = {
        logging.ERROR: "[red]error:[/red] ",
        logging.WARNING: "[yellow]warning:[/yellow] ",
    }

    def emit(self, record: logging.LogRecord) -> None:
        prefix = self.PREFIX.get(record.levelno, "")
        console.print(prefix, end="", soft_wrap=True)
        # A file name cannot start a line of its own or steer the terminal.
        text = printable(record.getMessage(), newlines=True)
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def _progress(no_progress: bool):
    from annot_denoise.progress import Progress

    return Progress(enabled=not no_progress)


def _restorer(settings, model: str | Path | None = None):
    """The job's model (or ``model``) as a Restorer; see :func:`load_restorer`."""
    from annot_denoise.inference.loading import load_restorer

    return load_restorer(settings, model)


ModelOption = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--model",
        help="A checkpoint from train (best.pt), or the name of a shipped model "
        "(annot-denoise models); default: the shipped 'default' model.",
    ),
]


def _threshold_option(help: str) -> Any:
    """``--mask-threshold``: a probability, or None for the checkpoint's own."""
    return Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--mask-threshold", min=0.0, max=1.0, help=help),
    ]


MaskThreshold = _threshold_option(
    "maskunet: probability above which a pixel counts as annotation "
    "(default: the value chosen on validation, stored in the checkpoint)."
)
ExportThreshold = _threshold_option(
    "maskunet: store this threshold instead of the one training chose on its "
    "validation crops (e.g. one chosen with eval on whole validation scans)."
)
Dilate = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--dilate",
        min=0,
        max=32,
        help="maskunet: grow the predicted mask by this many pixels (default: checkpoint's).",
    ),
]
Tta = Annotated[
    bool,
    typer.Option(
        "--tta",
        help="Average the network over the four flips of each image (test-time "
        "augmentation): fewer false detections, about 3x the time (bench/RESULTS.md).",
    ),
]
Postprocess = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--postprocess",
        help="Post-processing steps after the network: 'default' (the model's own list), "
        "'none' (the network's repair alone), or step names separated by commas, in "
        "their order (docs/postprocess.md lists them).",
    ),
]
Tile = Annotated[
    int,
    typer.Option(
        min=64,
        help="Native-resolution models: images larger than TILE x TILE go through "
        "overlapping tiles (bounded memory; lower it if the GPU runs out).",
    ),
]


@app.command("synth")
@friendly
def synth_cmd(
    clean_dir: Annotated[
        Path, typer.Argument(help="Folder of clean scans (searched recursively).")
    ],
    out_dir: Annotated[
        Path, typer.Argument(help="Dataset folder to write clean/ annotated/ masks/ into.")
    ],
    drawer: Annotated[
        str, typer.Option(help="Built-in drawer (see `annot-denoise drawers`) or module:function.")
    ] = "mixed",
    copies: Annotated[int, typer.Option(min=1, help="Differently annotated copies per scan.")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="Same seed, same bytes.")] = 0,
    colors: Annotated[
        str,
        typer.Option(
            help="Comma-separated annotation colours: white, yellow, cyan, green, ... or "
            "'sampled' (a colour drawn per mark around the families scanners use, pale "
            "ones included); see `annot-denoise drawers`."
        ),
    ] = "white,yellow,cyan",
    scanner_ui: Annotated[
        str,
        typer.Option(
            help="The scanner's own interface (depth scale, logo, settings text, bars): "
            "'keep' draws it on both images so a model learns to leave it, 'remove' on the "
            "annotated one only (it becomes a mark), 'off' draws none."
        ),
    ] = "keep",
    labels: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="A text file of labels, one per line, replacing the built-in words."),
    ] = None,
    jpeg_quality: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="JPEG-compress each pair after drawing, at this quality or one drawn "
            "from a range like 70-95 (docs/synth.md: how the mask is then defined)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0 = this process).")] = 0,
    preview: Annotated[
        int, typer.Option(min=0, help="Write OUT_DIR/preview.png with N samples and exit.")
    ] = 0,
    no_progress: NoProgress = False,
) -> None:
    """Draw synthetic annotations on clean scans and record the exact masks."""
    from annot_denoise.synth.pipeline import preview as make_preview
    from annot_denoise.synth.pipeline import synth
    from annot_denoise.synth.vocabulary import LabelsError, load_labels

    palette = [c.strip() for c in colors.split(",") if c.strip()]
    try:
        vocabulary = load_labels(labels) if labels is not None else None
    except LabelsError as exc:
        raise typer.BadParameter(str(exc), param_hint="--labels") from None
    drawing = dict(
        drawer=drawer,
        seed=seed,
        colors=palette,
        scanner_ui=scanner_ui,
        labels=vocabulary,
        jpeg_quality=jpeg_quality,
    )
    if preview:
        path = make_preview(clean_dir, out_dir / "preview.png", preview, **drawing)
        out.print(f"preview: {path}")
        return
    report = synth(
        clean_dir,
        out_dir,
        copies=copies,
        workers=workers,
        progress=_progress(no_progress),
        **drawing,
    )
    out.print(
        f"wrote {report.written} pairs to {out_dir} in {report.seconds:.1f} s"
        + (f"; {len(report.failed)} scans failed" if report.failed else "")
    )
    raise typer.Exit(0 if report.ok else 1)


@app.command("drawers")
def drawers_cmd() -> None:
    """List the built-in annotation drawers."""
    from annot_denoise.synth.drawers import describe_drawers

    table = Table("drawer", "what it draws")
    for name, text in describe_drawers().items():
        table.add_row(name, text)
    show(table)
    out.print("Custom drawers: --drawer my_pkg.my_module:draw (see examples/custom_drawer.py)")


@app.command("phantoms")
@friendly
def phantoms_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write phantom_NNNN.png into.")],
    count: Annotated[int, typer.Option(min=1, help="How many scans.")] = 16,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    height: Annotated[int, typer.Option(min=16, help="Image height in pixels.")] = 336,
    width: Annotated[int, typer.Option(min=16, help="Image width in pixels.")] = 544,
    color: Annotated[bool, typer.Option(help="Write 3-channel RGB scans.")] = False,
    varied: Annotated[
        bool,
        typer.Option(help="Random sizes (240-1200 px) and a third RGB; ignores size and colour."),
    ] = False,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0 = this process).")] = 0,
) -> None:
    """Write procedural ultrasound-like scans (the embedded demo data)."""
    from annot_denoise.phantom import write_phantoms

    paths = write_phantoms(
        out_dir,
        count,
        seed=seed,
        size=(height, width),
        color=color,
        varied=varied,
        workers=workers,
    )
    out.print(f"wrote {len(paths)} phantom scans to {out_dir}")


@app.command("init-config")
@friendly
def init_config_cmd(
    path: Annotated[Path, typer.Argument(help="Where to write the YAML config.")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a complete, commented default training config."""
    from annot_denoise.config import commented_defaults
    from annot_denoise.io import atomic_write_text

    if path.exists() and not force:
        error_line(f"{path} exists; pass --force to overwrite it")
        raise typer.Exit(1)
    atomic_write_text(path, commented_defaults())
    out.print(f"wrote {path}")


@app.command("train")
@friendly
def train_cmd(
    config: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(help="YAML config (see init-config); without it, the defaults plus --set."),
    ] = None,
    set_: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--set", help="Override a key, e.g. --set train.epochs=5 (repeatable)."),
    ] = None,
    device: Device = "auto",
    resume: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Run folder to continue from its last.pt (uses its config.yaml)."),
    ] = None,
    no_progress: NoProgress = False,
) -> None:
    """Train a network that maps annotated scans to clean ones."""
    from annot_denoise.config import load_config
    from annot_denoise.training.loop import train

    overrides = list(set_ or [])
    if resume is not None:
        if config is None:
            config = resume / "config.yaml"
        overrides.append(f"output.dir={resume}")
    cfg = load_config(config, overrides)  # no CONFIG: the defaults plus --set
    result = train(cfg, device=device, resume=resume is not None, progress=_progress(no_progress))
    row = result.last
    out.print(
        f"trained {result.epochs} epochs ({result.steps} steps) in {result.seconds:.0f} s; "
        f"best val loss {result.best_val_loss:.5f}"
        + (f", val PSNR {row['val_psnr']:.2f} dB" if "val_psnr" in row else "")
    )
    out.print(f"checkpoints: {result.run_dir / 'best.pt'}, {result.run_dir / 'last.pt'}")
    if result.skipped:
        console.print(f"[yellow]{len(result.skipped)} pairs were unreadable and skipped[/yellow]")
        raise typer.Exit(1)


@app.command("eval")
@friendly
def eval_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Folder laid out like synth's output.")],
    model: ModelOption = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("eval"),
    reference: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="A second checkpoint (e.g. the thesis autoencoder) scored as 'reference'."
        ),
    ] = None,
    batch_size: BatchSize = None,
    streams: Streams = None,
    mask_threshold: MaskThreshold = None,
    dilate: Dilate = None,
    tile: Tile = 1024,
    tta: Tta = False,
    postprocess: Postprocess = None,
    oracle: Annotated[
        bool,
        typer.Option(
            help="maskunet: also score its inpainter given the true mask ('model (true mask)'): "
            "what a perfect detector would give."
        ),
    ] = False,
    device: Device = "auto",
    no_progress: NoProgress = False,
) -> None:
    """Score the model against the baselines (identity, Telea with the true mask,
    classical blind inpainting) on ground-truth pairs."""
    from annot_denoise.config import EvalConfig
    from annot_denoise.evaluation.evaluate import evaluate

    cfg = EvalConfig(
        data_dir=data_dir, out=out_dir, model=model, reference=reference, device=device,
        batch_size=batch_size, streams=streams, mask_threshold=mask_threshold,
        dilate=dilate, tile=tile, tta=tta, postprocess=postprocess, oracle=oracle,
    )  # fmt: skip
    restorer, ckpt = _restorer(cfg)
    if oracle and not restorer.takes_masks:
        raise typer.BadParameter(
            "needs a mask-aware model at native resolution (maskunet trained on patches)",
            param_hint="--oracle",
        )
    methods, curves = {"model": restorer}, {"model": ckpt.get("history", [])}
    if reference is not None:
        ref, ref_ckpt = _restorer(cfg, reference)
        methods["reference"], curves["reference"] = ref, ref_ckpt.get("history", [])
    meta = {
        "model": model or "default",
        "reference": str(reference) if reference else None,
        "tta": tta,
        "postprocess": list(restorer.postprocess.steps),
    }
    report = evaluate(cfg, methods, progress=_progress(no_progress), meta=meta, curves=curves)
    show(render_metrics(report.methods))
    out.print(
        f"report: {out_dir / 'report.html'} (also report.json, per_image.csv, contact_sheet.png)"
    )
    raise typer.Exit(0 if report.ok else 1)


# clean's own options (and --batch-size and --streams, eval's too), named here so
# the command reads as a list.
BatchSize = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        min=1,
        help="Images (or tiles) per forward pass; by default 4 on the CPU, 16 on a GPU.",
    ),
]
Streams = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        min=1,
        help="CPU: batches in the network at once, sharing the cores [default: 2]. "
        "Always 1 on a GPU.",
    ),
]
GivenMasks = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--masks",
        help="maskunet: a folder of annotation masks mirroring INPUTS (NAME.mask.png as "
        "--save-mask writes, or the same name; nonzero = annotation; cine loops: "
        "NAME.frame0007.mask.png per frame, or one for all), used instead of "
        "detecting the marks.",
    ),
]
SaveMask = Annotated[
    bool,
    typer.Option(help="maskunet: write each predicted mask beside its output (NAME.mask.png)."),
]
CleanReportCsv = Annotated[
    bool, typer.Option("--report", help="Write OUT/clean_report.csv: changed-pixel fractions.")
]
CleanPreview = Annotated[
    int,
    typer.Option(
        min=0, help="Write OUT/clean_preview.png: before | after | mask of the first N images."
    ),
]
ClearBurnedIn = Annotated[
    bool,
    typer.Option(
        help="DICOM: set Burned In Annotation to NO in the outputs. Off by default: "
        "removing calipers is not de-identification; text such as names may remain."
    ),
]


@app.command("clean")
@friendly
def clean_cmd(
    inputs: Annotated[Path, typer.Argument(help="Image file or folder (searched recursively).")],
    model: ModelOption = None,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder; mirrors the input tree.")
    ] = Path("cleaned"),
    batch_size: BatchSize = None,
    workers: Annotated[int, typer.Option(min=1, help="Threads for reading and writing.")] = 2,
    streams: Streams = None,
    overwrite: Annotated[bool, typer.Option(help="Redo images whose output exists.")] = False,
    masks: GivenMasks = None,
    mask_threshold: MaskThreshold = None,
    dilate: Dilate = None,
    tile: Tile = 1024,
    tta: Tta = False,
    postprocess: Postprocess = None,
    save_mask: SaveMask = False,
    report: CleanReportCsv = False,
    preview: CleanPreview = 0,
    clear_burned_in: ClearBurnedIn = False,
    device: Device = "auto",
    no_progress: NoProgress = False,
) -> None:
    """Remove annotations from every image under INPUTS, writing the same formats to -o.

    JPEG outputs are written at quality 95; every other format is lossless, with the
    input's size, channels, alpha and bit depth. DICOM (.dcm, or files carrying the
    DICM preamble; needs the [dicom] extra) is written back as DICOM, every frame of
    a cine loop cleaned, with a new SOP Instance UID and Image Type DERIVED.
    """
    from annot_denoise.clean import clean
    from annot_denoise.config import CleanConfig

    cfg = CleanConfig(
        inputs=inputs, out=out_dir, model=model, device=device, batch_size=batch_size,
        workers=workers, streams=streams, overwrite=overwrite, masks=masks,
        mask_threshold=mask_threshold, dilate=dilate, tile=tile, tta=tta,
        postprocess=postprocess, save_mask=save_mask, report_csv=report, preview=preview,
        clear_burned_in=clear_burned_in,
    )  # fmt: skip
    restorer, _ = _restorer(cfg)
    if masks is not None and not restorer.takes_masks:
        raise typer.BadParameter(
            "needs a mask-aware model at native resolution (maskunet); "
            f"{model or 'default'} cannot inpaint given masks",
            param_hint="--masks",
        )
    meta = {"model": model or "default", "device": str(restorer.device)}
    result = clean(cfg, restorer, progress=_progress(no_progress), meta=meta)
    out.print(
        f"processed {result.processed}, skipped {result.skipped} (already done), "
        f"failed {len(result.failed)} in {result.seconds:.1f} s -> {out_dir}"
    )
    raise typer.Exit(0 if result.ok else 1)


@app.command("audit")
@friendly
def audit_cmd(
    cleaned: Annotated[
        Path,
        typer.Argument(help="Scans that carried marks, after cleaning (searched recursively)."),
    ],
    reference: Annotated[
        Path,
        typer.Argument(help="Scans that never carried marks, same kind of scanner and anatomy."),
    ],
    raw: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="The CLEANED scans before cleaning (same names): checks that the probe can "
            "see the marks at all."
        ),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option("--out", "-o", help="Report folder (audit.html, audit.json, per_image.csv)."),
    ] = Path("audit"),
    groups: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="CSV with columns file,group: files of one patient or recording share a fold."
        ),
    ] = None,
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--model",
            help="Model for the repair control and the residue: a shipped name, a checkpoint, "
            "or 'classical'; default: the shipped 'default' model.",
        ),
    ] = None,
    fail_above: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            min=0.0,
            max=1.0,
            help="Exit 1 when the CLEANED vs REFERENCE AUC's 95% lower bound is above this.",
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=20, help="Grouped cross-validation folds.")] = 5,
    permutations: Annotated[
        int, typer.Option(min=19, help="Label permutations for the p-value.")
    ] = 1000,
    bootstrap: Annotated[
        int, typer.Option(min=100, help="Bootstrap replicates for the 95% interval.")
    ] = 1000,
    seed: Annotated[
        int,
        typer.Option(
            min=0, help="Seed of the folds, bootstrap, permutations and the control's marks."
        ),
    ] = 0,
    probe_size: Annotated[
        int,
        typer.Option(min=64, max=1024, help="Side of the probe's square input (a multiple of 4)."),
    ] = 256,
    gallery: Annotated[
        int, typer.Option(min=0, max=48, help="Most detectable CLEANED scans shown in audit.html.")
    ] = 6,
    repair_control: Annotated[
        bool,
        typer.Option(
            help="Mark and clean half of REFERENCE with --model and compare it with the other half."
        ),
    ] = True,
    residue: Annotated[
        bool, typer.Option(help="Run the model's detector on CLEANED and REFERENCE.")
    ] = True,
    device: Device = "auto",
    no_progress: NoProgress = False,
) -> None:
    """Can a classifier still tell CLEANED scans from REFERENCE scans that never carried
    marks? A probe's cross-validated AUC with its interval and p-value, and controls
    that say what the number means (docs/audit.md)."""
    from pydantic import ValidationError

    from annot_denoise.evaluation.audit import AuditConfig, audit

    try:
        cfg = AuditConfig(
            cleaned=cleaned, reference=reference, raw=raw, out=out_dir, groups=groups,
            model=model or "default", device=device, folds=folds, bootstrap=bootstrap,
            permutations=permutations, seed=seed, probe_size=probe_size, fail_above=fail_above,
            repair_control=repair_control, residue=residue, gallery=gallery,
        )  # fmt: skip
    except ValidationError as exc:
        err = exc.errors()[0]
        hint = f"--{err['loc'][0]}".replace("_", "-")
        raise typer.BadParameter(err["msg"], param_hint=hint) from None
    result = audit(cfg, progress=_progress(no_progress))
    table = Table("comparison", "scans", "AUC", "95% interval", "p")
    for name, comparison in result.comparisons.items():
        r, s = comparison.result, comparison.summary
        table.add_row(
            f"{name}: {s['positive']} vs {s['negative']}",
            f"{s['n_positive']} + {s['n_negative']}",
            f"{r.auc:.3f}",
            f"{r.ci_low:.3f}-{r.ci_high:.3f}",
            f"{r.p_value:.3f}",
        )
    show(table)
    out.print(f"verdict: {result.verdict}. {result.summary}")
    out.print(f"report: {out_dir / 'audit.html'} (also audit.json, per_image.csv)")
    if result.exceeds:
        error_line(
            f"the CLEANED vs REFERENCE AUC's lower bound {result.cleaned.result.ci_low:.3f} "
            f"is above --fail-above {fail_above}"
        )
    raise typer.Exit(1 if result.exceeds or not result.ok else 0)


@app.command("models")
@friendly
def models_cmd() -> None:
    """List the models that ship with annot-denoise, with provenance and metrics."""
    from annot_denoise.pretrained import describe_models

    table = Table("name", "architecture", "parameters", "mask threshold / dilate", "trained",
                  "validation")  # fmt: skip
    for m in describe_models():
        prov, metrics = m["provenance"], m["metrics"]
        args = ", ".join(f"{k}={v}" for k, v in m["arch_args"].items())
        trained = (f"{prov.get('steps', '?')} steps x {prov.get('batch_size', '?')} on "
                   f"{prov.get('hardware', '?')}, {prov.get('date', '?')}")  # fmt: skip
        val = (f"PSNR {metrics.get('val_psnr', float('nan')):.2f} dB, in mask "
               f"{metrics.get('val_psnr_mask', float('nan')):.2f} dB, mask F1 "
               f"{metrics.get('val_mask_f1', float('nan')):.3f}")  # fmt: skip
        inf = m["inference"]
        table.add_row(m["name"], f"{m['arch']} ({args})", f"{m['parameters'] / 1e6:.2f} M",
                      f"{inf.get('mask_threshold', '-')} / {inf.get('mask_dilate', '-')} px",
                      trained, val)  # fmt: skip
    show(table)
    out.print("Recipe and evaluation: docs/default-model.md. Use one with --model NAME.")


@app.command("export")
@friendly
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A training checkpoint (best.pt).")],
    output: Annotated[Path, typer.Argument(help="Where to write the stripped model.")],
    full_precision: Annotated[
        bool, typer.Option(help="Keep fp32 weights (default: fp16, half the size).")
    ] = False,
    mask_threshold: ExportThreshold = None,
) -> None:
    """Strip a training checkpoint to what inference needs (no optimiser state)."""
    from annot_denoise.training.checkpoint import export_model

    export_model(checkpoint, output, half=not full_precision, mask_threshold=mask_threshold)
    out.print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")


@app.command("demo")
@friendly
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything.")] = Path(
        "demo"
    ),
    minutes: Annotated[float, typer.Option(min=0.1, help="Training time budget.")] = 2.0,
    device: Device = "auto",
    no_progress: NoProgress = False,
) -> None:
    """End to end on phantom scans, no data needed: fine-tune the default model on the fly,
    evaluate it beside the default model and the baselines, clean a folder, write report.html."""
    from annot_denoise.demo import run_demo

    result = run_demo(out_dir, minutes=minutes, device=device, progress=_progress(no_progress))
    show(render_metrics(result.metrics))
    out.print(f"demo finished in {result.seconds:.0f} s")
    for label, path in result.paths.items():
        out.print(f"{label}: {path}")


def show(table: Table) -> None:
    """Print a table; logs and pipes get 120 columns, not rich's 80, which would
    truncate method names."""
    if not out.is_terminal and out.width < 120:
        out.width = 120
    out.print(table)


def render_metrics(methods: dict[str, dict[str, float]]) -> Table:
    has_mask = any("f1" in m for m in methods.values())
    columns = ["method", "PSNR dB", "SSIM", "PSNR in mask dB", "change outside"]
    columns += ["mask P", "mask R", "mask F1", "mask IoU"] if has_mask else []
    table = Table(
        *columns,
        title="mean over images (higher is better; change outside the mask+3px: 0 is best)",
    )
    for name, m in methods.items():
        cells = [name, f"{m['psnr']:.2f}", f"{m['ssim']:.4f}", f"{m['psnr_mask']:.2f}",
                 f"{m['change_outside']:.3f}"]  # fmt: skip
        if has_mask:
            cells += [
                f"{m[k]:.3f}" if k in m else "-" for k in ("precision", "recall", "f1", "iou")
            ]
        table.add_row(*cells)
    return table


def main() -> None:
    app()


def reference_markdown() -> str:
    """The command reference: docs/cli.md is generated from it (``make docs-cli``)."""
    from typer.cli import MARKUP_MODE_KEY, get_docs_for_click

    command = typer.main.get_command(app)
    ctx = typer.Context(command, obj={MARKUP_MODE_KEY: app.rich_markup_mode})
    return get_docs_for_click(obj=command, ctx=ctx, name="annot-denoise").strip() + "\n"
