"""Training: outputs, resume, and the errors a user can hit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from annot_denoise.config import ConfigError, load_config, validate_config
from annot_denoise.training.checkpoint import load_checkpoint
from annot_denoise.training.data import build_datasets
from annot_denoise.training.loop import TrainingError, train
from annot_denoise.training.rundir import RunFolderError


def _cfg(data: Path, out: Path, **train_kw):
    return validate_config(
        {
            "data": {"root": str(data), "size": [48, 64], "patch": None},
            "model": {"arch": "unet", "width": 8, "depth": 2},
            "optim": {"warmup_steps": 2},
            "train": {"epochs": 2, "batch_size": 4, "workers": 0, "samples": 2, **train_kw},
            "output": {"dir": str(out)},
        }
    )


def test_run_folder_contents(trained_run: Path) -> None:
    for name in ("config.yaml", "best.pt", "last.pt", "metrics.jsonl"):
        assert (trained_run / name).is_file(), name
    rows = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "val_loss", "val_psnr", "lr", "seconds", "samples_per_s"):
        assert key in rows[0]
    assert sorted(p.name for p in (trained_run / "samples").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
    ]
    assert any((trained_run / "tensorboard").iterdir())
    ckpt = load_checkpoint(trained_run / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["arch"]["name"] == "unet"
    assert ckpt["config"]["model"]["width"] == 8


def test_training_reduces_the_loss(synth_dir: Path, tmp_path: Path, device: str) -> None:
    result = train(_cfg(synth_dir, tmp_path / "r", epochs=6), device=device)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert result.steps == 6 * 4


def test_resume_equals_uninterrupted(synth_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import annot_denoise.training.loop as train_module

    real_validate, calls = train_module.validate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # killed during epoch 2, after epoch 1's checkpoint
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    torch.use_deterministic_algorithms(True)
    try:
        train(_cfg(synth_dir, tmp_path / "full", epochs=3), device="cpu")
        monkeypatch.setattr(train_module, "validate", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(_cfg(synth_dir, tmp_path / "part", epochs=3), device="cpu")
        monkeypatch.setattr(train_module, "validate", real_validate)
        assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 0
        result = train(_cfg(synth_dir, tmp_path / "part", epochs=3), device="cpu", resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert result.epochs == 3
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


def test_existing_run_is_not_overwritten(trained_run: Path, synth_dir: Path) -> None:
    before = (trained_run / "last.pt").read_bytes()
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(_cfg(synth_dir, trained_run), device="cpu")
    assert (trained_run / "last.pt").read_bytes() == before


def test_resume_without_checkpoint(tmp_path: Path, synth_dir: Path) -> None:
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(_cfg(synth_dir, tmp_path / "empty"), device="cpu", resume=True)


def test_max_steps_and_autoencoder_sgd(synth_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth_dir, tmp_path / "ae", epochs=5, max_steps=3)
    cfg.model.arch = "autoencoder"
    cfg.optim.name = "sgd"
    result = train(cfg, device="cpu")
    assert result.steps == 3
    assert load_checkpoint(tmp_path / "ae" / "best.pt")["arch"]["name"] == "autoencoder"


def test_nan_loss_stops_with_a_clear_message(synth_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth_dir, tmp_path / "nan", epochs=2)
    cfg.optim.lr = 1e30
    cfg.optim.grad_clip = 0
    with pytest.raises(TrainingError, match=r"became NaN or infinite at step \d+"):
        train(cfg, device="cpu")


def test_maskunet_on_the_fly_run(mask_run: Path) -> None:
    ckpt = load_checkpoint(mask_run / "best.pt")
    assert ckpt["arch"]["name"] == "maskunet"
    assert ckpt["data"]["size"] is None
    assert 0 < ckpt["inference"]["mask_threshold"] < 1
    assert ckpt["inference"]["mask_dilate"] == 1  # model.mask_dilate's default
    rows = [json.loads(x) for x in (mask_run / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= rows[-1]["val_mask_f1"] <= 1


def test_on_the_fly_needs_clean_dir() -> None:
    with pytest.raises(ConfigError, match="clean_dir"):
        validate_config({"data": {"on_the_fly": True}})


def test_worker_count_does_not_change_the_result(phantom_dir: Path, tmp_path: Path) -> None:
    """Per-sample seeds travel with the index, so 0 or 2 DataLoader workers (alive
    across epochs) draw the same annotations and train the same weights."""

    def run(workers: int) -> dict:
        cfg = validate_config(
            {
                "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None,
                         "patch": 48, "repeats": 2, "val_split": 0.2},
                "model": {"arch": "maskunet", "width": 4, "depth": 1},
                "train": {"epochs": 2, "batch_size": 4, "workers": workers, "samples": 0},
                "output": {"dir": str(tmp_path / f"w{workers}"), "tensorboard": False},
            }
        )  # fmt: skip
        train(cfg, device="cpu")
        return load_checkpoint(tmp_path / f"w{workers}" / "last.pt")["model"]

    torch.use_deterministic_algorithms(True)
    try:
        a, b = run(0), run(2)
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tune_from_the_default_model(phantom_dir: Path, tmp_path: Path) -> None:
    from annot_denoise.pretrained import PRETRAINED

    def cfg(width: int):
        return validate_config(
            {
                "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None,
                         "patch": 48, "repeats": 1, "val_split": 0.2},
                "model": {"arch": "maskunet", "width": width, "depth": 3, "init": "default"},
                "train": {"epochs": 1, "batch_size": 4, "workers": 0, "samples": 0},
                "output": {"dir": str(tmp_path / f"ft{width}"), "tensorboard": False},
            }
        )  # fmt: skip

    with pytest.raises(TrainingError, match="differs from the config"):
        train(cfg(8), device="cpu")
    cfg16 = cfg(16)
    cfg16.train.max_steps = 1
    cfg16.optim.lr = 1e-12  # one step that changes nothing: the weights are the default's
    train(cfg16, device="cpu")
    tuned = load_checkpoint(tmp_path / "ft16" / "last.pt")["model"]
    shipped = load_checkpoint(PRETRAINED["default"])["model"]
    key = "mask_head.weight"
    assert torch.allclose(tuned[key], shipped[key].float(), atol=1e-3)


def test_new_narrow_detector_in_front_of_the_frozen_default_inpainter(
    phantom_dir: Path, tmp_path: Path
) -> None:
    from annot_denoise.pretrained import PRETRAINED
    from annot_denoise.training.checkpoint import load_model

    cfg = validate_config(
        {
            "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None,
                     "patch": 48, "repeats": 1, "val_split": 0.2},
            "model": {"arch": "maskunet", "width": 16, "depth": 3, "detector_width": 8,
                      "init": "default", "freeze": ["inpainter"]},
            "train": {"epochs": 1, "max_steps": 2, "batch_size": 4, "workers": 0, "samples": 0},
            "output": {"dir": str(tmp_path / "fast"), "tensorboard": False},
        }
    )  # fmt: skip
    train(cfg, device="cpu")
    ckpt = load_checkpoint(tmp_path / "fast" / "last.pt")
    tuned, shipped = ckpt["model"], load_checkpoint(PRETRAINED["default"])["model"]
    assert ckpt["arch"]["kwargs"]["detector_width"] == 8
    assert tuned["detector.stem.0.weight"].shape[0] == 8
    inpainter = [k for k in shipped if not k.startswith(("detector.", "mask_head."))]
    # Weights and batch-norm statistics alike: two steps at lr 2e-3 left them as shipped.
    assert inpainter and all(torch.equal(tuned[k], shipped[k].float()) for k in inpainter)
    model, _ = load_model(tmp_path / "fast" / "best.pt")
    assert model.detector.stem[0].out_channels == 8  # it loads back as trained


def test_inpainter_alone_with_the_log_content_term(phantom_dir: Path, tmp_path: Path) -> None:
    from annot_denoise.pretrained import PRETRAINED

    cfg = validate_config(
        {
            "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None,
                     "patch": 48, "repeats": 1, "val_split": 0.2},
            "model": {"arch": "maskunet", "init": "default", "freeze": ["detector"]},
            "loss": {"content_metric": "log_mse"},
            "train": {"epochs": 1, "max_steps": 2, "batch_size": 4, "workers": 0, "samples": 0},
            "output": {"dir": str(tmp_path / "inpaint"), "tensorboard": False},
        }
    )  # fmt: skip
    train(cfg, device="cpu")
    tuned = load_checkpoint(tmp_path / "inpaint" / "last.pt")["model"]
    shipped = load_checkpoint(PRETRAINED["default"])["model"]
    detector = [k for k in shipped if k.startswith(("detector.", "mask_head."))]
    inpainter = [k for k in shipped if k.startswith(("inpainter.", "content_"))]
    assert detector and all(torch.equal(tuned[k], shipped[k].float()) for k in detector)
    assert any(not torch.equal(tuned[k], shipped[k].float()) for k in inpainter)


def test_training_passes_the_hole_and_content_settings_on(
    phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import annot_denoise.training.loop as loop
    from annot_denoise.models.maskunet import MaskUNet

    seen: dict[str, set] = {"holes": set(), "metric": set()}
    forward, loss = MaskUNet.forward, loop.restoration_loss

    def spy_forward(self, x, true_mask=None, **kwargs):
        if true_mask is not None:
            seen["holes"].add((kwargs.get("train_holes"), kwargs.get("dilate")))
        return forward(self, x, true_mask, **kwargs)

    def spy_loss(*args, **kwargs):
        seen["metric"].add(kwargs.get("content_metric"))
        return loss(*args, **kwargs)

    monkeypatch.setattr(MaskUNet, "forward", spy_forward)
    monkeypatch.setattr(loop, "restoration_loss", spy_loss)
    cfg = validate_config(
        {
            "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None,
                     "patch": 48, "repeats": 1, "val_split": 0.2},
            "model": {"arch": "maskunet", "width": 8, "depth": 2, "mask_dilate": 2,
                      "train_holes": "inference"},
            "loss": {"content_metric": "log_mse"},
            "train": {"epochs": 1, "max_steps": 1, "batch_size": 2, "workers": 0, "samples": 0},
            "output": {"dir": str(tmp_path / "run"), "tensorboard": False},
        }
    )  # fmt: skip
    train(cfg, device="cpu")
    assert seen == {"holes": {("inference", 2)}, "metric": {"log_mse"}}


def test_narrow_detector_and_freeze_are_checked() -> None:
    base = {"data": {"root": "x", "size": [64, 64]}}
    with pytest.raises(ConfigError, match="maskunet only"):
        validate_config({**base, "model": {"arch": "unet", "detector_width": 8}})
    with pytest.raises(ConfigError, match="maskunet only"):
        validate_config({**base, "model": {"arch": "unet", "train_holes": "inference"}})
    with pytest.raises(ConfigError, match="nothing would be trained"):
        validate_config({**base, "model": {"freeze": ["detector", "inpainter"]}})


# --------------------------------------------------------------------------- what a run reports


@pytest.mark.parametrize("max_steps", [4, 6])
def test_a_step_budget_reports_the_epochs_it_trained(
    synth_dir: Path, tmp_path: Path, max_steps: int
) -> None:
    result = train(_cfg(synth_dir, tmp_path / "r", epochs=5, max_steps=max_steps), device="cpu")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == max_steps == rows[-1]["step"]
    assert result.epochs == len(rows) == rows[-1]["epoch"]
    assert load_checkpoint(tmp_path / "r" / "last.pt")["epoch"] + 1 == result.epochs


def test_a_spent_time_budget_still_trains_a_step(synth_dir: Path, tmp_path: Path) -> None:
    """A budget gone before the first batch arrives: the run trains one step and
    reports one epoch, not an epoch of nothing and then one more."""
    result = train(_cfg(synth_dir, tmp_path / "r", epochs=5, max_minutes=1e-6), device="cpu")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == 1 and rows[0]["samples_per_s"] > 0
    assert result.epochs == len(rows) == 1


def test_a_time_budget_ends_the_run_rather_than_start_a_sliver_of_an_epoch() -> None:
    from annot_denoise.training.loop import budget_horizon

    # 200 steps an epoch: 15 steps left is too few for an epoch and its validation.
    assert budget_horizon(step=400, fit=415, cap=10_000, epoch_steps=200) == 400
    assert budget_horizon(step=400, fit=450, cap=10_000, epoch_steps=200) == 450
    assert budget_horizon(step=400, fit=900, cap=500, epoch_steps=200) == 500  # the cap
    assert budget_horizon(step=400, fit=300, cap=10_000, epoch_steps=200) == 400  # overdue
    assert budget_horizon(step=4, fit=5, cap=100, epoch_steps=3) == 5  # tiny epochs: a step


def _poison(monkeypatch, after_first_epoch: bool) -> None:
    """Make the training loss NaN from the first step, or once an epoch has finished."""
    import annot_denoise.training.loop as train_module

    real_objective, real_validate = train_module.objective, train_module.validate
    state = {"bad": not after_first_epoch}

    def objective(*args, **kwargs):
        loss = real_objective(*args, **kwargs)
        return loss * math.nan if state["bad"] and torch.is_grad_enabled() else loss

    def validate(*args, **kwargs):
        out = real_validate(*args, **kwargs)
        state["bad"] = True
        return out

    monkeypatch.setattr(train_module, "objective", objective)
    monkeypatch.setattr(train_module, "validate", validate)


def test_nan_in_the_first_epoch_says_nothing_was_saved(
    synth_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    _poison(monkeypatch, after_first_epoch=False)
    with pytest.raises(TrainingError) as err:
        train(_cfg(synth_dir, tmp_path / "nan"), device="cpu")
    assert "at step 1" in str(err.value) and "no weights were saved" in str(err.value)
    assert not (tmp_path / "nan" / "last.pt").exists()


def test_nan_later_names_the_weights_that_exist(
    synth_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    _poison(monkeypatch, after_first_epoch=True)
    with pytest.raises(TrainingError) as err:
        train(_cfg(synth_dir, tmp_path / "nan"), device="cpu")
    last = tmp_path / "nan" / "last.pt"
    assert f"the weights of the last finished epoch are in {last}" in str(err.value)
    assert load_checkpoint(last)["epoch"] == 0


def test_a_cpu_run_checks_every_step_even_where_cuda_exists(tmp_path: Path) -> None:
    """How often the loss is checked depends on the run's device, not on whether the
    machine has a GPU: a CPU run stops at the first NaN, before any update."""
    import subprocess
    import sys

    script = f"""
import torch
torch.cuda.is_available = lambda: True  # a machine with a GPU, and a run on its CPU
from annot_denoise.config import validate_config
from annot_denoise.models import build_model
from annot_denoise.training.loop import TrainingError, train_one_epoch

cfg = validate_config({{"output": {{"dir": {str(tmp_path)!r}}}}})
model = build_model("unet", in_channels=1, width=4, depth=1)
torch.nn.init.constant_(model.head.bias, float("nan"))
batch = {{k: torch.rand(2, 1, 16, 16) for k in ("annotated", "clean", "mask")}}
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
scaler = torch.amp.GradScaler("cpu", enabled=False)
try:
    train_one_epoch(model, [batch] * 5, opt, sched, scaler, cfg, torch.device("cpu"), None, 0, 99)
except TrainingError:
    print("updates before stopping:", sched.last_epoch)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "updates before stopping: 0" in done.stdout, done.stdout + done.stderr


# --------------------------------------------------------------------------- run folders


def test_an_output_dir_that_is_a_file_is_refused(synth_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("notes")
    for out, reason in [
        (tmp_path / "taken", "is a file, not a folder"),
        (tmp_path / "taken" / "run", "is not a folder"),
    ]:
        with pytest.raises(RunFolderError, match=reason):
            train(_cfg(synth_dir, out), device="cpu")
    assert (tmp_path / "taken").read_text() == "notes"


def test_a_run_refused_before_training_leaves_no_folder(synth_dir: Path, tmp_path: Path) -> None:
    from annot_denoise.training.data import DatasetError

    cfg = _cfg(synth_dir, tmp_path / "r").model_dump()
    cfg["data"].update(size=None, patch=200)
    with pytest.raises(DatasetError, match=r"data\.patch 200"):
        train(validate_config(cfg), device="cpu")
    assert not (tmp_path / "r").exists()


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's trained run (unet, width 8, depth 2) to resume."""
    import shutil

    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def _resumed(run: Path, change: dict | None = None):
    """The run's saved config pointed at ``run`` (as `train --resume RUN` does), changed."""
    raw = load_config(run / "config.yaml", [f"output.dir={run}"]).model_dump()
    for section, values in (change or {}).items():
        raw[section].update(values)
    return validate_config(raw)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"model": {"width": 16}}, "model.width=8, cannot continue with 16"),
        ({"model": {"depth": 3}}, "model.depth=2, cannot continue with 3"),
        ({"model": {"norm": "group"}}, "model.norm='batch', cannot continue with 'group'"),
        ({"model": {"arch": "autoencoder"}}, "model.arch='unet', cannot continue with"),
        ({"data": {"channels": 1}}, "data.channels=3, cannot continue with 1"),
        ({"optim": {"name": "sgd"}}, "optim.name='adamw', cannot continue with 'sgd'"),
        (
            {"loss": {"content_metric": "log_mse"}},
            "loss.content_metric='mse', cannot continue with 'log_mse'",
        ),
    ],
)
def test_resume_keeps_the_architecture(
    run_copy: Path, synth_dir: Path, change: dict, said: str
) -> None:
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    with pytest.raises(RunFolderError) as err:
        train(_resumed(run_copy, change), device="cpu", resume=True)
    assert str(err.value).startswith(f"{run_copy / 'last.pt'}: the run was trained with {said}")
    assert {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()} == before


def test_resume_takes_a_new_learning_rate(run_copy: Path) -> None:
    """`--resume RUN --set optim.lr=...` continues at that rate, not the saved one."""
    change = {"optim": {"lr": 1e-4, "scheduler": "constant"}, "train": {"epochs": 3}}
    train(_resumed(run_copy, change), device="cpu", resume=True)
    rows = [json.loads(x) for x in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1]["lr"] != pytest.approx(1e-4) and rows[2]["lr"] == pytest.approx(1e-4)


def test_an_exported_model_cannot_be_resumed(run_copy: Path) -> None:
    from annot_denoise.training.checkpoint import export_model

    export_model(run_copy / "last.pt", run_copy / "last.pt")
    with pytest.raises(RunFolderError, match="cannot be resumed: it has no optimizer"):
        train(_resumed(run_copy), device="cpu", resume=True)


def test_a_damaged_training_state_is_one_error(run_copy: Path) -> None:
    ckpt = torch.load(run_copy / "last.pt", weights_only=True)
    ckpt["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(ckpt, run_copy / "last.pt")
    with pytest.raises(RunFolderError, match="its training state does not fit this run"):
        train(_resumed(run_copy), device="cpu", resume=True)


def test_data_echo_cuts_several_patches_from_each_drawing(
    phantom_dir: Path, tmp_path: Path
) -> None:
    """Data echoing: a step still takes train.batch_size patches, from batch_size / echo
    drawings; the epoch holds echo times the patches."""
    raw = {
        "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None,
                 "patch": 48, "repeats": 2, "val_split": 0.2, "echo": 2},
        "model": {"arch": "maskunet", "width": 4, "depth": 1},
        "train": {"epochs": 1, "batch_size": 4, "workers": 0, "samples": 0},
        "output": {"dir": str(tmp_path / "echo"), "tensorboard": False},
    }  # fmt: skip
    cfg = validate_config(raw)
    drawings = len(build_datasets(cfg)[0])
    result = train(cfg, device="cpu")
    assert result.steps == drawings // 2  # 2 drawings, 4 patches a step
    rows = [json.loads(x) for x in (tmp_path / "echo" / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(rows[0]["train_loss"])
    with pytest.raises(ConfigError, match=r"not a multiple of data\.echo"):
        validate_config({**raw, "train": {**raw["train"], "batch_size": 5}})
