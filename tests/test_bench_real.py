"""bench/real.py: the committed real-data split and the damage counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_US = ROOT.parent / "shared" / "data" / "real-us"


@pytest.fixture(scope="module")
def real(bench):
    return bench("real")


def test_damage_counts_ui_and_anatomy_apart(real):
    annotated = np.zeros((40, 40), np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[20, 20] = True  # grown by 3 px: rows and columns 17-23 are not scored
    ui = np.zeros((40, 40), bool)
    ui[0:2, 0:10] = True  # 20 interface pixels
    output = annotated.copy()
    output[0, 0:5] = 3  # 5 interface pixels changed by more than 2 levels
    output[30, 30] = 2  # not more than 2: unchanged
    output[35, 35] = 9  # one anatomy pixel
    output[21, 21] = 200  # inside the grown mask: neither
    counts = real.damage(output, annotated, mask, ui)
    assert counts == {
        "ui_changed": 5,
        "ui_pixels": 20,
        "anatomy_changed": 1,
        "anatomy_pixels": 40 * 40 - 49 - 20,
    }


def test_split_three_keeps_recordings_whole(real, monkeypatch):
    monkeypatch.setattr(real, "split_real", lambda f: {"validation": [], "test": sorted(f)})
    files = [f"clean/pocus__Reg_a_vid{k}.png" for k in range(3)] + ["clean/hc18__1_HC.png"]
    licence = {f: "CC BY 4.0" for f in files}
    licence["clean/pocus__Reg_a_vid1.png"] = "CC BY-NC 4.0"
    with pytest.raises(ValueError, match="pocus/Reg_a"):
        real.split_three(files, licence)


@pytest.mark.skipif(not (REAL_US / "manifest.csv").is_file(), reason="no ../shared/data/real-us")
def test_committed_split_is_what_the_manifest_gives(real):
    computed = real.compute_split(REAL_US)
    assert computed == real.compute_split(REAL_US)
    assert real.split_drift(computed) is None
    committed = json.loads(real.SPLIT_FILE.read_text(encoding="utf-8"))
    parts = [set(committed[k]) for k in ("train", "validation", "test")]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 182
    groups = [{real.group(f) for f in part} for part in parts]
    assert not (groups[0] & groups[2]) and not (groups[1] & (groups[0] | groups[2]))
