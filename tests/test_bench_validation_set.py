"""bench/validation_set.py: the sets on which choices are made, without the real scans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from annot_denoise.io import read_image


@pytest.fixture(scope="module")
def validation_set(bench):
    return bench("validation_set")


def _clean_is_source(out: Path) -> list[bool]:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    same = []
    for row in rows:
        clean = read_image(out / "clean" / row["output"])
        source = read_image(out / "sources" / row["source"])
        if source.ndim == 2 and clean.ndim == 3:
            source = np.repeat(source[..., None], 3, axis=2)
        same.append(np.array_equal(clean, source))
        assert read_image(out / "masks" / row["output"]).any()
    return same


def test_scanner_ui_off_draws_the_same_scans_without_an_interface(validation_set, tmp_path):
    missing = str(tmp_path / "no-real-us")
    for ui in ("keep", "off"):
        validation_set.main(["--out", str(tmp_path / ui), "--real-us", missing, "--scanner-ui", ui])
    keep, off = _clean_is_source(tmp_path / "keep"), _clean_is_source(tmp_path / "off")
    assert len(keep) == len(off) == 36
    assert all(off) and not any(keep)
    assert json.loads((tmp_path / "off" / "split.json").read_text())["scanner_ui"] == "off"


def test_quality_like_pairs_have_no_interface(validation_set, tmp_path):
    validation_set.main(["--out", str(tmp_path / "q"), "--quality-like"])
    assert all(_clean_is_source(tmp_path / "q"))
    assert len(list((tmp_path / "q" / "annotated").iterdir())) == validation_set.QUALITY_LIKE[0]
