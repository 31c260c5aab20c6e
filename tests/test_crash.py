"""Crash safety: real ``kill -9`` of ``clean`` and ``train`` subprocesses, then resume.

A SIGKILL runs no handler and no ``finally``: what is on disk is all there is. The
promises under test (README, "clean" and "train"): a killed run never leaves a
truncated file under a final name; rerunning the same command finishes the job and
gives the same bytes (clean) or the same weights (train) as an uninterrupted run.
Kill moments come from a seeded ``random.Random``; the subprocesses run with one
thread each, so two of them can share the 2 CI cores and stay deterministic.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from annot_denoise.io import list_images, read_image, write_image
from annot_denoise.training.checkpoint import load_checkpoint

ENV = {
    **os.environ,
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NO_COLOR": "1",
}
KILLED = -signal.SIGKILL
# What io.atomic_write_bytes names its temporary files: ".NAME.<16 hex>.tmp".
TEMP = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{16}\.tmp$")


@contextmanager
def launched(args: list[str], log: Path, *, code: str | None = None, **env: str) -> Iterator:
    """``python -m annot_denoise ARGS`` (or ``python -c CODE ARGS``) in the background,
    output appended to ``log``; SIGKILLed on the way out, so it never outlives the test."""
    command = [sys.executable, *(["-c", code] if code else ["-m", "annot_denoise"]), *args]
    with log.open("ab") as fh:
        fh.write(f"\n$ annot-denoise {' '.join(args)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env={**ENV, **env})
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()


def run(args: list[str], log: Path, timeout: float = 120) -> int:
    with launched(args, log) as proc:
        return proc.wait(timeout=timeout)


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> bool:
    """Poll until ``ready()``; False if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return ready()
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.002)
    return True


def kill(proc: subprocess.Popen) -> int:
    """SIGKILL; the return code is ``KILLED`` only if the process was still running."""
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def hidden_files(root: Path) -> set[Path]:
    return {p for p in root.rglob(".*") if p.is_file()}


def assert_temporaries_are_only_leftovers(root: Path, finals: set[Path]) -> set[Path]:
    """Every hidden file under ``root`` is a temporary of one of ``finals`` (never a
    final name itself); returns them."""
    found = hidden_files(root)
    for tmp in found:
        match = TEMP.match(tmp.name)
        assert match, f"unexpected hidden file {tmp}"
        assert tmp.with_name(match["name"]) in finals, f"{tmp} belongs to no output"
    return found


# --------------------------------------------------------------------------- clean


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """36 small scans: 8-bit grey PNG, 16-bit grey TIFF and RGB JPEG in a subfolder."""
    from annot_denoise.phantom import write_phantoms

    root = tmp_path / "scans"
    write_phantoms(root, 28, seed=5, size=(96, 128))
    for i in range(4):
        grey = read_image(root / f"phantom_{i:04d}.png")
        write_image(root / "deep" / f"scan16_{i}.tif", grey.astype(np.uint16) * 257)
        write_image(root / "deep" / f"photo_{i}.jpg", np.repeat(grey[..., None], 3, axis=2))
    return root


def outputs(out: Path) -> dict[Path, bytes]:
    """The images under their final names (relative path -> bytes)."""
    return {p.relative_to(out): p.read_bytes() for p in finished(out)}


def finished(out: Path) -> list[Path]:
    return list_images(out) if out.is_dir() else []


@pytest.mark.slow
def test_clean_killed_again_and_again_finishes_with_identical_bytes(
    scans: Path, tmp_path: Path
) -> None:
    rng = random.Random(1729)
    inputs = {p.relative_to(scans): p.read_bytes() for p in list_images(scans)}
    assert len(inputs) == 36
    ref, out, log = tmp_path / "ref", tmp_path / "out", tmp_path / "clean.log"
    args = ["clean", str(scans), "-o", str(out), "--no-progress", "--device", "cpu"]
    args += ["--batch-size", "2"]
    finals = {out / rel for rel in inputs} | {out / "clean_run.json"}
    leftovers: set[Path] = set()
    ref_args = [*args[:3], str(ref), *args[4:]]
    with launched(ref_args, tmp_path / "reference.log") as reference:
        # One kill during start-up (nothing written yet), then kills once a few more
        # outputs have appeared: each rerun skips what the previous one finished.
        with launched(args, log) as proc:
            time.sleep(rng.uniform(0.05, 0.5))
            assert kill(proc) == KILLED
        for _ in range(3):
            target = len(outputs(out)) + rng.randint(2, 6)
            assert target <= len(inputs) - 8  # leaves work to interrupt
            with launched(args, log) as proc:
                assert wait_for(proc, lambda n=target: len(finished(out)) >= n)
                assert kill(proc) == KILLED
            assert not (out / "clean_run.json").exists()  # written only by a finished run
            # Nothing truncated under a final name: each output decodes like its input.
            for rel in outputs(out):
                a, b = read_image(scans / rel), read_image(out / rel)
                assert a.shape == b.shape and a.dtype == b.dtype, rel
            leftovers |= assert_temporaries_are_only_leftovers(out, finals)
        assert reference.wait(timeout=120) == 0, (tmp_path / "reference.log").read_text()
    done_before = set(outputs(out))
    assert 8 <= len(done_before) <= len(inputs) - 8

    assert run(args, log) == 0, log.read_text()
    record = json.loads((out / "clean_run.json").read_text())
    assert record["skipped"] == len(done_before) > 0
    assert record["processed"] == len(inputs) - len(done_before)
    assert record["failed"] == []
    expected = outputs(ref)
    assert set(expected) == set(inputs)
    # Byte for byte what the uninterrupted run wrote (inference is deterministic on the CPU).
    assert outputs(out) == expected
    # A finished run adds no temporaries of its own and sweeps those of killed writes;
    # under a final name there never is one.
    assert not hidden_files(out)
    assert_temporaries_are_only_leftovers(out, finals)
    visible = {p for p in out.rglob("*") if p.is_file() and p not in hidden_files(out)}
    assert visible == finals  # the outputs and clean_run.json, nothing else

    assert run([*args, "--overwrite"], log) == 0, log.read_text()
    record = json.loads((out / "clean_run.json").read_text())
    assert (record["processed"], record["skipped"]) == (len(inputs), 0)
    assert outputs(out) == expected
    assert not hidden_files(out)
    assert {p.relative_to(scans): p.read_bytes() for p in list_images(scans)} == inputs


def test_rerun_after_a_kill_sweeps_stale_temporaries(scans: Path, tmp_path: Path) -> None:
    from annot_denoise.clean import clean
    from annot_denoise.config import CleanConfig
    from annot_denoise.inference import Restorer
    from annot_denoise.pretrained import resolve_model
    from annot_denoise.training.checkpoint import load_model

    model, ckpt = load_model(resolve_model(None))
    restorer = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    src, out = scans / "deep", tmp_path / "out"
    # What SIGKILL between os.open and os.replace in atomic_write_bytes leaves behind.
    out.mkdir()
    stale = out / ".photo_0.jpg.0123456789abcdef.tmp"
    stale.write_bytes((src / "photo_0.jpg").read_bytes()[:100])
    report = clean(CleanConfig(inputs=src, out=out), restorer)
    assert report.ok and report.processed == 8
    assert not stale.exists()
    assert hidden_files(out) == set()


# --------------------------------------------------------------------------- train

EPOCHS = 3


@pytest.fixture(scope="module")
def train_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny deterministic CPU run: 8 phantoms drawn on the fly, 6 steps an epoch."""
    from annot_denoise.phantom import write_phantoms

    root = tmp_path_factory.mktemp("train")
    write_phantoms(root / "clean", 8, seed=3, size=(96, 128))
    config = {
        "data": {
            "on_the_fly": True,
            "clean_dir": str(root / "clean"),
            "size": None,
            "patch": 48,
            "repeats": 4,
            "val_split": 0.25,
        },
        "model": {"arch": "unet", "width": 8, "depth": 2},
        "optim": {"warmup_steps": 2},
        "train": {"epochs": EPOCHS, "batch_size": 4, "workers": 0, "samples": 0, "seed": 0},
        "output": {"dir": str(root / "unused"), "tensorboard": False},
    }
    path = root / "cfg.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def train_args(config: Path, run_dir: Path) -> list[str]:
    return ["train", str(config), "--set", f"output.dir={run_dir}", "--device", "cpu"]


def resume_args(run_dir: Path) -> list[str]:
    return ["train", "--resume", str(run_dir), "--device", "cpu", "--no-progress"]


def epochs_in_metrics(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


@pytest.mark.slow
def test_train_killed_before_and_after_a_checkpoint_resumes_to_the_same_weights(
    train_config: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from annot_denoise.cli import app

    rng = random.Random(31337)
    ref, part, log = tmp_path / "ref", tmp_path / "part", tmp_path / "train.log"
    ref_args = [*train_args(train_config, ref), "--no-progress"]
    with launched(ref_args, tmp_path / "reference.log") as reference:
        # 1. Killed before any checkpoint: --resume says there is nothing to resume,
        #    and the same command as before starts the run afresh.
        with launched(train_args(train_config, part), log) as proc:
            assert wait_for(proc, (part / "config.yaml").exists)
            assert kill(proc) == KILLED
        assert not (part / "last.pt").exists()
        result = CliRunner().invoke(app, resume_args(part))
        assert result.exit_code == 1
        assert "nothing to resume (no last.pt)" in result.output
        # 2. Killed a seeded moment after the first epoch's checkpoint, then resumed.
        with launched(train_args(train_config, part), log) as proc:
            assert wait_for(proc, (part / "last.pt").exists)
            time.sleep(rng.uniform(0.0, 0.1))  # epochs 2 and 3 take >= 0.3 s here
            assert kill(proc) == KILLED
        killed_at = load_checkpoint(part / "last.pt")["epoch"]
        assert killed_at < EPOCHS - 1
        assert_temporaries_are_only_leftovers(part, {part / n for n in ("last.pt", "best.pt")})
        assert run(resume_args(part), log) == 0, log.read_text()
        assert reference.wait(timeout=120) == 0, (tmp_path / "reference.log").read_text()
    a = load_checkpoint(ref / "last.pt")
    b = load_checkpoint(part / "last.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (EPOCHS - 1, EPOCHS * 6)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    epochs = epochs_in_metrics(part)
    assert epochs == sorted(set(epochs)) and epochs[-1] == EPOCHS


# A driver that SIGKILLs itself at one exact moment: right after the first checkpoint
# file of an epoch is on disk, before the epoch's other files (the other checkpoint, the
# metrics row) are written.
KILL_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
import annot_denoise.training.loop as train_module
real = train_module.save_checkpoint
def save_then_die(path, state):
    real(path, state)
    if state["epoch"] == int(os.environ["KILL_AFTER_EPOCH"]):
        os.kill(os.getpid(), signal.SIGKILL)
train_module.save_checkpoint = save_then_die
from annot_denoise.cli import app
app(sys.argv[1:], prog_name="annot-denoise")
"""


@pytest.fixture(scope="module")
def killed_between_checkpoint_and_metrics(
    train_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A one-epoch run killed between the files of its epoch, then recovered the way the
    CLI says: ``--resume`` if there is a last.pt, else the same command again.

    One epoch, so the result does not hang on the losses: the first epoch always
    improves on "no best yet", and no later epoch can cover a stale best.pt up.
    """
    run_dir = tmp_path_factory.mktemp("window") / "run"
    log = run_dir.parent / "train.log"
    args = [*train_args(train_config, run_dir), "--set", "train.epochs=1", "--no-progress"]
    code = KILL_AFTER_FIRST_CHECKPOINT
    with launched(args, log, code=code, KILL_AFTER_EPOCH="0") as proc:
        assert proc.wait(timeout=120) == KILLED, log.read_text()
    again = resume_args(run_dir) if (run_dir / "last.pt").exists() else args
    assert run(again, log) == 0, log.read_text()
    return run_dir


@pytest.mark.slow
def test_kill_between_the_files_of_an_epoch_is_recoverable(
    killed_between_checkpoint_and_metrics: Path,
) -> None:
    """The fixture really killed the run and the recovery finished it."""
    run_dir = killed_between_checkpoint_and_metrics
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 0
    assert "trained 1 epochs" in (run_dir.parent / "train.log").read_text()


@pytest.mark.slow
def test_resume_after_a_kill_keeps_one_metrics_row_per_epoch(
    killed_between_checkpoint_and_metrics: Path,
) -> None:
    run_dir = killed_between_checkpoint_and_metrics
    assert (run_dir / "metrics.jsonl").is_file()
    assert epochs_in_metrics(run_dir) == [1]


@pytest.mark.slow
def test_resume_after_a_kill_keeps_best_pt_on_the_best_epoch(
    killed_between_checkpoint_and_metrics: Path,
) -> None:
    run_dir = killed_between_checkpoint_and_metrics
    last = load_checkpoint(run_dir / "last.pt")
    assert (run_dir / "best.pt").is_file()
    best = load_checkpoint(run_dir / "best.pt")
    assert best["metrics"]["val_loss"] == last["best_val_loss"]
    assert best["epoch"] == last["epoch"]
