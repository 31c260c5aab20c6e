"""Typed configuration: one strict pydantic model per job, YAML plus ``--set`` overrides.

``load_config(path, overrides)`` reads YAML into a dict, applies ``key.sub=value``
overrides, then validates once. Any unknown key, wrong type or out-of-range value
raises :class:`ConfigError` whose message names the key and the file. Configs are
small: :mod:`annot_denoise.safe_yaml` refuses, unparsed, files or ``--set`` values
too big, too deep or expanding too far.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from annot_denoise import safe_yaml

ArchName = Literal["autoencoder", "unet", "maskunet"]
# Bounds shared with the checkpoint metadata (checkpoint.py): what a config may ask
# for, a checkpoint may describe.
Width = Annotated[int, Field(ge=4, le=512)]
Depth = Annotated[int, Field(ge=1, le=7)]
Norm = Literal["batch", "group", "none"]
Channels = Literal[1, 3]
MaskDilate = Annotated[int, Field(ge=0, le=32)]
# Pixels the thresholded detection grows by at inference unless a checkpoint or the
# caller says otherwise: the one default the restorer, the model, checkpoints and
# training configs share.
MASK_DILATE = 1
MIN_SIDE, MAX_SIDE = 16, 8192  # a resize target or patch side, in pixels

MAX_PROBLEMS = 10  # validation problems listed before "... and N more"


class ConfigError(Exception):
    """A configuration problem the user can fix; the message says where."""


class _Strict(BaseModel):
    # inf and nan pass gt=0 / ge=0 bounds, and no run can use them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1; a YAML "yes" for epochs is a mistake.
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation is not bool:
            raise ValueError("expected a number, not true/false")
        return value


class DataConfig(_Strict):
    root: Path | None = Field(
        Path("data/synth"),
        description="folder with clean/ and annotated/ (and optional masks/), as `synth` writes",
    )
    on_the_fly: bool = Field(
        False, description="draw fresh annotations on clean_dir scans at every access"
    )
    clean_dir: Path | None = Field(None, description="clean scans for on_the_fly training")
    drawer: str = Field(
        "mixed", description="on_the_fly drawer: a built-in name or module:function"
    )
    colors: list[str] = Field(
        ["white", "yellow", "cyan"], description="on_the_fly annotation colours"
    )
    scanner_ui: Literal["keep", "remove", "off"] = Field(
        "keep",
        description="on_the_fly: a scanner interface drawn on both images (keep: the network "
        "learns to leave it), on the annotated one only (remove: it is a mark), or none",
    )
    scanner_ui_share: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="on_the_fly with scanner_ui keep or remove: share of drawings that get "
        "an interface; the others get none, like scans cropped to the image area",
    )
    interface_focus: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="on_the_fly with scanner_ui keep: share of patches cut around the "
        "interface (its text, scales and bars) instead of around the marks",
    )
    labels: Path | None = Field(
        None, description="on_the_fly: a text file, one label per line, replacing the built-in"
    )
    jpeg_quality: int | tuple[int, int] | None = Field(
        None,
        description="on_the_fly: JPEG-compress each pair after drawing, at this quality or "
        "one drawn from [lo, hi] (docs/synth.md: how the mask is defined)",
    )
    repeats: int = Field(4, ge=1, description="on_the_fly samples per clean scan per epoch")
    echo: int = Field(
        1,
        ge=1,
        le=16,
        description="on_the_fly: patches cut from each drawn pair (data echoing, for a GPU "
        "that trains faster than the CPU draws); train.batch_size must be a multiple of it",
    )
    augment: bool = Field(
        True, description="on_the_fly: flips, scale, gain and gamma before drawing"
    )
    val_split: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of scans held out")
    size: tuple[int, int] | None = Field(
        None, description="[height, width] to resize to (the thesis: [336, 544]); null = native"
    )
    patch: int | None = Field(
        256,
        ge=MIN_SIDE,
        le=MAX_SIDE,
        description="train on random square crops of this side (after any resize)",
    )
    channels: Channels = Field(3, description="1 = grey network, 3 = RGB network")
    cache: bool = Field(
        True, description="decode (and resize) every scan once, up front, and keep it in memory"
    )

    @field_validator("jpeg_quality")
    @classmethod
    def _quality(cls, value: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        from annot_denoise.synth.compress import check_jpeg_quality

        return check_jpeg_quality(value)

    @field_validator("size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        return None if value is None else check_size(value)

    @model_validator(mode="after")
    def _source(self) -> DataConfig:
        if self.on_the_fly and self.clean_dir is None:
            raise ValueError("on_the_fly needs data.clean_dir (a folder of clean scans)")
        if not self.on_the_fly and self.root is None:
            raise ValueError("data.root is required unless data.on_the_fly is true")
        if self.size is None and self.patch is None:
            raise ValueError("give data.size (resize) or data.patch (native-scale crops)")
        if self.interface_focus and not (
            self.on_the_fly and self.scanner_ui == "keep" and self.patch
        ):
            raise ValueError(
                "data.interface_focus cuts patches around the interface that on-the-fly "
                "drawing keeps: it needs data.on_the_fly, data.scanner_ui: keep and data.patch"
            )
        if self.scanner_ui_share < 1 and not (self.on_the_fly and self.scanner_ui != "off"):
            raise ValueError(
                "data.scanner_ui_share is the share of on-the-fly drawings with an "
                "interface: it needs data.on_the_fly and data.scanner_ui keep or remove"
            )
        if self.echo > 1 and not (self.on_the_fly and self.patch):
            raise ValueError(
                "data.echo cuts several patches from each drawn pair: it needs "
                "data.on_the_fly and data.patch"
            )
        if self.size is not None and self.patch is not None and self.patch > min(self.size):
            # Crops are zero-padded to the patch: the network would learn the padding.
            raise ValueError(
                f"data.patch {self.patch} is larger than the images resized to data.size "
                f"{list(self.size)}; lower data.patch to at most {min(self.size)}, or set it "
                "to null to train on whole resized images"
            )
        return self


def check_size(size: tuple[int, int] | list[int]) -> tuple[int, int] | list[int]:
    """A [height, width] resize target within the sides a network can be fed."""
    if min(size) < MIN_SIDE:
        raise ValueError(f"both sides must be at least {MIN_SIDE} pixels")
    if max(size) > MAX_SIDE:
        raise ValueError(f"both sides must be at most {MAX_SIDE} pixels")
    return size


class ModelConfig(_Strict):
    arch: ArchName = Field(
        "maskunet", description="maskunet (mask + inpainting), unet (skips) or autoencoder"
    )
    width: Width = Field(16, description="channels at the first level")
    depth: Depth = Field(3, description="number of 2x down-samplings")
    norm: Norm = Field("batch", description="normalisation after each convolution")
    init: str | None = Field(
        None,
        description="start from these weights: 'default' (the shipped model) or a checkpoint",
    )
    mask_dilate: MaskDilate = Field(
        MASK_DILATE, description="maskunet: pixels the predicted mask may grow by at inference"
    )
    detector_width: Width | None = Field(
        None,
        description="maskunet: channels at the detector's first level; null = width. "
        "The detector runs on every pixel: a narrower one is faster",
    )
    train_holes: Literal["grown", "inference"] = Field(
        "grown",
        description="maskunet: the inpainter's holes while training: the true mask grown "
        "by 2 px, plus the detector's finds (at 0.5); or the true mask plus the finds, "
        "grown as inference grows them (by up to mask_dilate px where the ring looks "
        "like a mark's fringe)",
    )
    freeze: list[Literal["detector", "inpainter"]] = Field(
        [],
        description="maskunet: stages whose weights stay fixed while training "
        "(e.g. [inpainter] to train a new detector for a finished inpainter)",
    )

    @model_validator(mode="after")
    def _maskunet_only(self) -> ModelConfig:
        if self.arch != "maskunet" and (
            self.detector_width is not None or self.freeze or self.train_holes != "grown"
        ):
            raise ValueError(
                "model.detector_width, model.freeze and model.train_holes apply to maskunet only"
            )
        if {"detector", "inpainter"} <= set(self.freeze):
            raise ValueError("model.freeze lists both stages: nothing would be trained")
        return self


class LossConfig(_Strict):
    alpha: float = Field(60.0, gt=0, description="weight of annotated pixels")
    beta: float = Field(1.0, ge=0, description="weight of all other pixels")
    ssim_weight: float = Field(0.0, ge=0, description="weight of a (1 - SSIM) term; 0 = off")
    mask_weight: float = Field(
        1.0, ge=0, description="maskunet: weight of the mask loss (BCE + Dice)"
    )
    content_weight: float = Field(
        10.0, ge=0, description="maskunet: weight of the content MSE on and around the marks"
    )
    content_metric: Literal["mse", "log_mse"] = Field(
        "mse",
        description="maskunet: the content term: mse (pooled over the batch's pixels) or "
        "log_mse (log10 of each patch's MSE, averaged: every patch counts alike, as in "
        "eval's per-image PSNR). With log_mse, content_weight 10 makes the term minus "
        "the patches' mean content PSNR in dB: the loss is negative and the validation "
        "loss (best.pt) follows the content more than the mask",
    )
    interface_weight: float = Field(
        1.0,
        ge=0,
        description="maskunet: weight, in the mask loss's BCE, of the scanner interface's "
        "pixels that on-the-fly drawing kept (data.scanner_ui: keep); 1 = like any pixel",
    )


class OptimConfig(_Strict):
    name: Literal["sgd", "adamw"] = Field("adamw", description="sgd (with momentum) or adamw")
    lr: float = Field(2e-3, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0, description="decoupled weight decay")
    scheduler: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine decay to 1% of lr after warm-up, or constant"
    )
    warmup_steps: int = Field(50, ge=0, description="linear warm-up steps")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 = no clipping")


class TrainLoopConfig(_Strict):
    epochs: int = Field(30, gt=0, description="passes over the training set")
    batch_size: int = Field(
        8,
        gt=0,
        description="pairs (patches) per step; with data.echo, from batch_size / echo drawings",
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="seed for the split, initialisation and shuffling"
    )
    workers: int = Field(2, ge=0, description="DataLoader worker processes (0 = main process)")
    compile: bool = Field(False, description="torch.compile the training step (CUDA)")
    amp: bool = Field(
        True, description="mixed precision: bf16 (else fp16) on CUDA, bf16 on CPUs that have it"
    )
    max_steps: int | None = Field(None, gt=0, description="stop after this many steps")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="wall-time budget: training stops when it is spent; the LR schedule fits it",
    )
    samples: int = Field(4, ge=0, description="validation triplets saved to samples/ each epoch")


class OutputConfig(_Strict):
    dir: Path = Field(Path("runs/exp"), description="run folder: checkpoints, logs, samples")
    tensorboard: bool = Field(True, description="write TensorBoard event files")


class TrainConfig(_Strict):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainLoopConfig = TrainLoopConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _echo_fits_the_batch(self) -> TrainConfig:
        if self.train.batch_size % self.data.echo:
            raise ValueError(
                f"train.batch_size {self.train.batch_size} is not a multiple of data.echo "
                f"{self.data.echo}: a batch holds whole drawn pairs"
            )
        return self


class InferenceConfig(_Strict):
    """How a trained model is applied; ``clean`` and ``eval`` share it."""

    model: str | None = Field(
        None, description="a checkpoint or the name of a shipped model; null: 'default'"
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    batch_size: int | None = Field(
        None, ge=1, description="images (or tiles) per pass; null: 4 on the CPU, 16 on a GPU"
    )
    mask_threshold: float | None = Field(
        None, ge=0, le=1, description="probability above which a pixel is a mark; null: model's"
    )
    dilate: MaskDilate | None = Field(
        None, description="pixels the mask may grow by; null: the model's"
    )
    tile: int = Field(1024, ge=64, description="larger images go through overlapping tiles")
    tta: bool = Field(False, description="average the network over the four flips")
    streams: int | None = Field(
        None, ge=1, description="CPU: batches in the network at once; null: 2 (1 on a GPU)"
    )
    postprocess: str | None = Field(
        None, description="'default', 'none' or step names separated by commas; null: model's"
    )


class EvalConfig(InferenceConfig):
    """``annot-denoise eval``: score models and baselines on ground-truth pairs."""

    data_dir: Path = Field(description="folder laid out like synth's output")
    out: Path = Field(Path("eval"), description="report folder")
    reference: Path | None = Field(None, description="a second checkpoint scored as reference")
    oracle: bool = Field(False, description="also score the inpainter given the true mask")
    baselines: list[Literal["identity", "telea", "classical"]] = Field(
        ["identity", "telea", "classical"], description="baselines scored beside the models"
    )
    sheet_rows: int = Field(6, ge=0, description="pairs shown in contact_sheet.png")


class CleanConfig(InferenceConfig):
    """``annot-denoise clean``: remove the marks from every scan under ``inputs``."""

    inputs: Path = Field(description="an image file or a folder, searched recursively")
    out: Path = Field(Path("cleaned"), description="output folder; mirrors the input tree")
    workers: int = Field(2, ge=1, description="threads for reading and writing")
    overwrite: bool = Field(False, description="redo images whose output exists")
    masks: Path | None = Field(
        None, description="a folder of given masks mirroring inputs, used instead of detection"
    )
    save_mask: bool = Field(False, description="write each predicted mask beside its output")
    report_csv: bool = Field(False, description="write clean_report.csv")
    preview: int = Field(0, ge=0, description="first N images in clean_preview.png")
    clear_burned_in: bool = Field(
        False, description="DICOM: set Burned In Annotation to NO in the outputs"
    )


def load_config(path: Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read ``path`` (or the defaults when None), apply overrides, validate."""
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = safe_yaml.load(safe_yaml.read_text(Path(path))) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({safe_yaml.problem(exc)})") from None
        except safe_yaml.Refused as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        # A section whose keys are all commented out parses as None: it means "defaults".
        raw = {k: ({} if v is None else v) for k, v in raw.items()}
    for item in overrides or []:
        apply_override(raw, item)
    keys = [item.partition("=")[0].strip() for item in overrides or []]
    return validate_config(raw, source, override_keys=keys)


def validate_config(
    raw: dict[str, Any], source: str = "<config>", override_keys: list[str] | None = None
) -> TrainConfig:
    """Validate a plain dict, turning pydantic's report into one readable message."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, override_keys or [])) from None


def format_validation_error(
    exc: ValidationError, source: str, override_keys: list[str] | None = None
) -> str:
    """One line per problem (the first :data:`MAX_PROBLEMS`): where the value came
    from, the key, what is wrong."""
    errors = exc.errors()
    lines = [_problem(err, source, override_keys or []) for err in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"... and {len(errors) - MAX_PROBLEMS} more problems")
    return "\n".join(lines)


def _problem(err: dict, source: str, override_keys: list[str]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "<top level>"
    from_override = any(
        k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in override_keys
    )
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; `annot-denoise init-config` lists all keys)"
    elif err["type"] == "value_error":  # our own validators: their text, without a prefix
        msg = str(err["ctx"]["error"])
    elif "input" in err and not isinstance(err["input"], dict):
        msg = f"{msg} (got {shown(err['input'])})"
    return f"--set {key}: {msg}" if from_override else f"{source}: {key}: {msg}"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def shown(value: Any) -> str:
    """A short repr for an error message, whatever the value's size."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an int too long for str() (Python's 4300-digit limit)
        bits = value.bit_length() if isinstance(value, int) else None
        return f"<an integer of {bits} bits>" if bits else f"<a {type(value).__name__}>"


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {shown(item)}: expected key=value, e.g. train.epochs=5")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {shown(item)}: {part!r} is a value, not a section")
        node = child
    try:
        node[parts[-1]] = safe_yaml.load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"--set {shown(item)}: cannot parse the value ({safe_yaml.problem(exc)})"
        ) from None
    except safe_yaml.Refused as exc:
        raise ConfigError(f"--set {shown(item)}: {exc}") from None


def dump_config(cfg: BaseModel) -> str:
    """YAML text of a validated config (paths as strings)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def commented_defaults() -> str:
    """The complete default training config as YAML with one comment per key."""
    lines = [
        "# annot-denoise training config: every key, with its default.",
        "# Validate and run with: annot-denoise train THIS_FILE [--set section.key=value ...]",
        "# Relative paths are taken from the folder you run the command in.",
    ]
    defaults = TrainConfig()
    for section in TrainConfig.model_fields:
        lines.append("")
        lines.append(f"{section}:")
        model = getattr(defaults, section)
        for name, info in type(model).model_fields.items():
            value = yaml.safe_dump(model.model_dump(mode="json")[name], default_flow_style=True)
            value = value.strip().removesuffix("...").strip()
            lines.append(f"{f'  {name}: {value}':<34} # {info.description}")
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """The config reference as a Markdown table (docs/config.md is generated from it)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    defaults = TrainConfig()
    for section in TrainConfig.model_fields:
        model = getattr(defaults, section)
        dumped = model.model_dump(mode="json")
        for name, info in type(model).model_fields.items():
            value = yaml.safe_dump(dumped[name], default_flow_style=True).strip()
            value = value.removesuffix("...").strip()
            rows.append(f"| `{section}.{name}` | `{value}` | {info.description} |")
    return "\n".join(rows) + "\n"
