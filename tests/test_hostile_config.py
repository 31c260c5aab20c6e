"""Hostile configs, crafted checkpoints and impossible output paths, through the CLI.

Everything here is built by the test. Each case must end in exactly one ``error:``
line naming the file or key and the reason, exit code 1 or 2, no traceback, and
nothing written; the hostile ones must be refused at once, not after a huge
allocation or an expansion that never ends.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from annot_denoise.cli import app


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result, code: int, *needles: str) -> str:
    """The single error line of a refused command, checked."""
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == code, result.output
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output and "unexpected" not in lines[0], result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def laughs(levels: int = 9) -> str:
    """A config whose model.width is 9**levels values, by aliases of aliases."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join([*lines, "model:", f"  width: *a{levels}"]) + "\n"


# --------------------------------------------------------------------------- configs


def test_billion_laughs_config(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs())
    start = time.perf_counter()
    result = run("train", path, "--set", f"output.dir={tmp_path / 'run'}")
    assert time.perf_counter() - start < 5
    one_error(result, 2, str(path), "refused", "aliases expand")
    assert not (tmp_path / "run").exists()


def test_billion_laughs_override(tmp_path: Path) -> None:
    value = "&a0 [x, x, x, x, x, x, x, x, x]"
    for i in range(1, 7):
        value = f"&a{i} [{value}, " + ", ".join([f"*a{i - 1}"] * 8) + "]"
    result = run("train", "--set", f"data.colors={value}", "--set", f"output.dir={tmp_path}/r")
    line = one_error(result, 2, "--set 'data.colors=", "aliases expand")
    assert len(line) < 300
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("optim:\n  lr: .inf\n", "optim.lr"),
        ("optim:\n  lr: .nan\n", "optim.lr"),
        ("loss:\n  alpha: -.inf\n", "loss.alpha"),
        ("train:\n  seed: 100000000000000000000\n", "train.seed"),
        ("data:\n  size: [100000, 100000]\n", "data.size"),
    ],
)
def test_values_that_validate_but_cannot_run(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    one_error(run("train", path), 2, f"{path}: {key}: ")


def test_patch_larger_than_every_scan(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run(
        "train", "--set", f"data.root={synth_dir}", "--set", "data.size=null",
        "--set", "data.patch=200", "--set", "train.workers=0", "--set", f"output.dir={out}",
        "--no-progress",
    )  # fmt: skip
    one_error(result, 1, "data.patch 200", "every training image", "128x96")
    assert not out.exists()


def test_patch_larger_than_the_resize(tmp_path: Path) -> None:
    result = run("train", "--set", "data.size=[96,128]", "--set", "data.patch=256")
    one_error(result, 2, "data.patch 256", "[96, 128]")


def test_resume_with_another_architecture(trained_run: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(trained_run, tmp_path / "run"))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    result = run("train", "--resume", run_dir, "--set", "model.width=32", "--no-progress")
    one_error(result, 1, str(run_dir / "last.pt"), "model.width=8, cannot continue with 32")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_output_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("notes")
    result = run("train", "--set", f"output.dir={tmp_path / 'taken'}")
    one_error(result, 1, str(tmp_path / "taken"), "is a file, not a folder")
    result = run("train", "--set", f"output.dir={tmp_path / 'taken' / 'run'}")
    one_error(result, 1, "is not a folder")
    assert (tmp_path / "taken").read_text() == "notes"


# --------------------------------------------------------------------------- checkpoints


def crafted(source: Path, path: Path, change) -> Path:
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)
    return path


CRAFTED = {
    "arch.kwargs.width": lambda c: c["arch"]["kwargs"].update(width=10**9),
    "arch.kwargs.evil": lambda c: c["arch"]["kwargs"].update(evil="rm -rf"),
    "data.size": lambda c: c["data"].update(size=[10**6, 10**6]),
    "data.channels": lambda c: c["data"].update(channels=4),
    "inference.mask_threshold": lambda c: c.update(inference={"mask_threshold": float("nan")}),
    "inference.mask_dilate": lambda c: c.update(inference={"mask_dilate": 10**9}),
    "inference": lambda c: c.update(inference=[]),
    "history.0.epoch": lambda c: c.update(history=[{"train_loss": 1.0}]),
}


@pytest.mark.parametrize("key", sorted(CRAFTED))
def test_crafted_checkpoint_in_eval_and_clean(
    key: str, trained_run: Path, synth_dir: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    path = crafted(trained_run / "best.pt", tmp_path / "crafted.pt", CRAFTED[key])
    start = time.perf_counter()
    result = run("eval", synth_dir, "--model", path, "-o", tmp_path / "ev", "--no-progress")
    assert time.perf_counter() - start < 5
    one_error(result, 1, f"{path}: {key}: ")
    result = run("clean", phantom_dir, "--model", path, "-o", tmp_path / "out", "--no-progress")
    one_error(result, 1, f"{path}: {key}: ")
    assert not (tmp_path / "ev").exists() and not (tmp_path / "out").exists()


def test_weights_that_do_not_fit_their_architecture(trained_run: Path, tmp_path: Path) -> None:
    """In bounds (width 512, depth 7: billions of weights) but not what the file holds:
    refused by shape, on the meta device, before any network is built."""
    change = lambda c: c["arch"]["kwargs"].update(width=512, depth=7)  # noqa: E731
    path = crafted(trained_run / "best.pt", tmp_path / "big.pt", change)
    start = time.perf_counter()
    result = run("clean", tmp_path, "--model", path, "-o", tmp_path / "out")
    assert time.perf_counter() - start < 5
    one_error(result, 1, str(path), "weights do not fit 'unet'")


# --------------------------------------------------------------------------- export, phantoms


def test_export_to_impossible_places(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("notes")
    for output, reason in [
        (tmp_path / "folder", "is a folder"),
        (tmp_path / "file" / "model.pt", "is not a folder"),
    ]:
        one_error(run("export", trained_run / "best.pt", output), 1, str(output), reason)
    assert not any((tmp_path / "folder").iterdir())
    assert (tmp_path / "file").read_text() == "notes"


def test_export_of_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not weights")
    out = tmp_path / "out" / "model.pt"
    one_error(run("export", tmp_path / "notes.txt", out), 1, "not a readable checkpoint")
    one_error(run("export", tmp_path, out), 1, "is a folder, not a checkpoint")
    one_error(run("export", tmp_path / "gone.pt", out), 1, "checkpoint not found")
    assert not (tmp_path / "out").exists()


def test_phantoms_into_impossible_places(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("notes")
    result = run("phantoms", tmp_path / "file", "--count", "1")
    one_error(result, 1, str(tmp_path / "file"), "is a file")
    result = run("phantoms", tmp_path / "file" / "scans", "--count", "1")
    one_error(result, 1, "is not a folder")
    assert (tmp_path / "file").read_text() == "notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
