"""DistributedDataParallel training and sharded cleaning under torchrun (2 gloo ranks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TRAIN_SCRIPT = """
import json, os, sys
import torch
from annot_denoise.config import validate_config
from annot_denoise.training.loop import train
cfg = validate_config(json.loads(sys.argv[1]))
result = train(cfg, device="cpu", resume=sys.argv[3] == "resume")
torch.save(result.model.state_dict(), os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_ranks_train_identical_weights_and_rank0_writes(
    phantom_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cfg = {
        "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None, "patch": 48,
                 "repeats": 2, "val_split": 0.2},
        "model": {"arch": "maskunet", "width": 4, "depth": 1},
        "train": {"epochs": 2, "batch_size": 4, "workers": 0, "samples": 1},
        "output": {"dir": str(run)},
    }  # fmt: skip
    script = tmp_path / "train_ddp.py"
    script.write_text(TRAIN_SCRIPT)
    torchrun(str(script), json.dumps(cfg), str(tmp_path), "fresh")
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer, not two
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert not [p for p in run.rglob(".*tmp")]
    # Resume works the same way under torchrun.
    cfg["train"]["epochs"] = 3
    torchrun(str(script), json.dumps(cfg), str(tmp_path), "resume")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


@pytest.mark.slow
def test_sharded_clean_equals_single_process(mask_run: Path, phantom_dir: Path, tmp_path: Path):
    model = str(mask_run / "best.pt")
    single = subprocess.run(
        [sys.executable, "-m", "annot_denoise", "clean", str(phantom_dir), "--model", model,
         "-o", str(tmp_path / "single"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    torchrun("-m", "annot_denoise", "clean", str(phantom_dir), "--model", model,
             "-o", str(tmp_path / "sharded"), "--no-progress")  # fmt: skip
    images = sorted(p.name for p in phantom_dir.glob("*.png"))
    for name in images:
        assert (tmp_path / "sharded" / name).read_bytes() == (
            tmp_path / "single" / name
        ).read_bytes()
    counts = [
        json.loads((tmp_path / "sharded" / f"clean_run.rank{r}.json").read_text())["processed"]
        for r in (0, 1)
    ]
    assert counts == [5, 5]  # disjoint halves of the ten scans
    # A second sharded run finds everything done.
    torchrun("-m", "annot_denoise", "clean", str(phantom_dir), "--model", model,
             "-o", str(tmp_path / "sharded"), "--no-progress")  # fmt: skip
    skipped = [
        json.loads((tmp_path / "sharded" / f"clean_run.rank{r}.json").read_text())["skipped"]
        for r in (0, 1)
    ]
    assert skipped == [5, 5]
