"""audit(): the probe's power and calibration, its outputs, and bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import browser, images_decoded, load
from pydantic import ValidationError

from annot_denoise.evaluation import probe
from annot_denoise.evaluation.audit import AuditConfig, AuditError, audit
from annot_denoise.io import read_image, write_image
from annot_denoise.phantom import make_phantom
from annot_denoise.synth.pipeline import annotate

FAST = dict(permutations=99, bootstrap=200, probe_size=160, repair_control=False, residue=False)
N = 60  # scans a side for power and calibration


def _write(folder: Path, images: list[np.ndarray], prefix: str) -> Path:
    for i, image in enumerate(images):
        write_image(folder / f"{prefix}{i:03d}.png", image)
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """Phantom scans: RAW (marked), CLEAN (never marked, other scans), and the clean
    ones split in two halves A and B."""
    root = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(18)
    marked = [annotate(make_phantom(160, 200, rng), "mixed", rng)[1] for _ in range(N)]
    clean = [make_phantom(160, 200, rng) for _ in range(N)]
    return {
        "root": root,
        "raw": _write(root / "raw", marked, "m"),
        "clean": _write(root / "clean", clean, "c"),
        "half_a": _write(root / "half_a", clean[: N // 2], "a"),
        "half_b": _write(root / "half_b", clean[N // 2 :], "b"),
    }


@pytest.fixture(scope="module")
def power(sets):
    cfg = AuditConfig(
        cleaned=sets["raw"], reference=sets["clean"], out=sets["root"] / "power", **FAST
    )
    return audit(cfg.model_copy(update={"fail_above": 0.9}))


@pytest.fixture(scope="module")
def calibration(sets):
    cfg = AuditConfig(
        cleaned=sets["half_a"], reference=sets["half_b"], out=sets["root"] / "calib", **FAST
    )
    return audit(cfg.model_copy(update={"fail_above": 0.9}))


def test_probe_has_power(power) -> None:
    main = power.cleaned.result
    assert main.auc >= 0.95
    assert main.p_value <= 0.01  # 1/(99+1): no permutation did as well
    assert power.verdict == "detected"
    assert power.exceeds  # the interval lies above --fail-above 0.9


def test_probe_is_calibrated(calibration) -> None:
    main = calibration.cleaned.result
    assert main.ci_low <= 0.5 <= main.ci_high
    assert calibration.verdict == "not-detected"
    assert not calibration.exceeds


def test_outputs_are_written_and_valid(power, sets) -> None:
    out = sets["root"] / "power"
    report = json.loads((out / "audit.json").read_text())
    main = report["comparisons"]["cleaned"]
    assert report["verdict"] == power.verdict and report["exceeds_fail_above"] is True
    assert main["n_positive"] == N and main["n_negative"] == N
    assert main["ci95"][0] <= main["auc"] <= main["ci95"][1]
    assert report["settings"]["permutations"] == 99 and report["caveats"]
    with open(out / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * N
    assert {r["side"] for r in rows} == {"cleaned", "reference"}
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([r["label"] == "1" for r in rows])
    assert probe.auc(scores, labels) == pytest.approx(main["auc"], abs=1e-4)
    page = (out / "audit.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page
    assert "What the controls can and cannot separate" in page
    assert page.count("<img") == 1 + 1 + 6 * 2  # intervals, heatmap, gallery of six


def test_heatmap_is_the_score_pixel_by_pixel(sets) -> None:
    image = read_image(sets["raw"] / "m000.png")
    x = probe.probe_input(image, 160)
    w = np.random.default_rng(0).normal(size=probe.N_FEATURES)
    heat = probe.contribution_map(x, w, 0.25)
    assert heat.shape == (160 // probe.HEAT_BLOCK,) * 2
    assert heat.mean() == pytest.approx(w @ probe.features(x) + 0.25, rel=1e-5)


def test_same_config_same_numbers(sets, calibration) -> None:
    cfg = AuditConfig(
        cleaned=sets["half_a"], reference=sets["half_b"], out=sets["root"] / "again", **FAST
    )
    again = audit(cfg)
    assert again.cleaned.result.auc == calibration.cleaned.result.auc
    assert again.cleaned.result.p_value == calibration.cleaned.result.p_value
    np.testing.assert_array_equal(again.cleaned.result.scores, calibration.cleaned.result.scores)


def test_full_audit_with_the_shipped_model(sets, tmp_path) -> None:
    """Cleaned by the shipped model; RAW, the repair control and the residue."""
    from annot_denoise.inference import Restorer
    from annot_denoise.pretrained import resolve_model
    from annot_denoise.training.checkpoint import load_model

    net, ckpt = load_model(resolve_model("default"))
    restorer = Restorer.from_checkpoint(net, ckpt, __import__("torch").device("cpu"))
    raw, cleaned = tmp_path / "raw", tmp_path / "cleaned"
    for i in range(12):
        image = read_image(sets["raw"] / f"m{i:03d}.png")
        write_image(raw / f"m{i:03d}.png", image)
        write_image(cleaned / f"m{i:03d}.png", restorer.restore([image])[0].image)
    reference = _write(tmp_path / "ref", [read_image(p) for p in _first(sets["clean"], 20)], "r")
    cfg = AuditConfig(
        cleaned=cleaned,
        reference=reference,
        raw=raw,
        out=tmp_path / "report",
        model="default",
        device="cpu",
        permutations=49,
        bootstrap=100,
        probe_size=128,
        gallery=2,
    )
    result = audit(cfg)
    assert set(result.comparisons) == {"cleaned", "raw", "repair"}
    control = result.comparisons["repair"]
    assert control.labels.sum() == 10 and (~control.labels).sum() == 10
    assert result.residue is not None and 0 <= result.residue["cleaned_mean"] <= 1
    assert result.verdict in ("not-detected", "repair-trace", "detected", "inconclusive")
    report = json.loads((tmp_path / "report" / "audit.json").read_text())
    assert set(report["comparisons"]) == {"cleaned", "raw", "repair"}
    assert report["settings"]["model"] == "default"
    with open(tmp_path / "report" / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["comparison"] for r in rows} == {"cleaned", "raw", "repair"}
    assert all(r["residue"] for r in rows if r["side"] == "cleaned")


def _first(folder: Path, n: int) -> list[Path]:
    return sorted(folder.iterdir())[:n]


def _copy(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for p in paths:
        shutil.copy(p, folder / p.name)
    return folder


def _quick(cleaned: Path, reference: Path, out: Path, **kw) -> AuditConfig:
    return AuditConfig(cleaned=cleaned, reference=reference, out=out, **{**FAST, **kw})


def test_too_few_scans_is_one_clear_error(sets, tmp_path) -> None:
    few = _copy(_first(sets["raw"], 9), tmp_path / "few")
    (few / "broken.png").write_bytes(b"not a png")
    with pytest.raises(AuditError, match=r"CLEANED: 9 readable scans \(1 unreadable\).*10"):
        audit(_quick(few, sets["clean"], tmp_path / "out"))


def test_unreadable_file_is_named_and_the_audit_goes_on(sets, tmp_path) -> None:
    cleaned = _copy(_first(sets["raw"], 12), tmp_path / "c")
    (cleaned / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = audit(_quick(cleaned, sets["half_b"], tmp_path / "out"))
    assert len(result.failed) == 1 and "broken.png" in result.failed[0]
    assert "\n" not in result.failed[0] and not result.ok
    assert result.cleaned.labels.sum() == 12
    assert "broken.png" in json.loads((tmp_path / "out" / "audit.json").read_text())["failed"][0]


def test_mixed_sizes_and_layouts_are_handled_and_stated(sets, tmp_path) -> None:
    rng = np.random.default_rng(5)
    sizes = [(120, 150), (200, 160), (96, 300)]
    mixed = [make_phantom(*sizes[i % 3], rng, color=i % 2 == 0) for i in range(12)]
    result = audit(_quick(_write(tmp_path / "m", mixed, "x"), sets["half_b"], tmp_path / "out"))
    text = " ".join(result.notes)
    assert "from 150x96 to 300x200" in text  # width x height
    assert "resized to 160x160" in text
    assert "Channel layouts differ" in text and "3 channels (RGB)" in text


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing", "CLEANED .*: no such folder"),
        ("same", "CLEANED and REFERENCE are the same folder"),
        ("inside", "lies inside the scanned folders"),
        ("file", "-o .*: is a file"),
    ],
)
def test_bad_paths_are_refused_before_any_work(sets, tmp_path, where, message) -> None:
    cleaned, reference, out = sets["half_a"], sets["half_b"], tmp_path / "out"
    if where == "missing":
        cleaned = tmp_path / "nowhere"
    elif where == "same":
        reference = sets["half_a"]
    elif where == "inside":
        out = sets["half_b"] / "report"
    else:
        out.write_text("a file")
    with pytest.raises(AuditError, match=message):
        audit(_quick(cleaned, reference, out))
    assert not (sets["half_b"] / "report").exists()


def test_groups_csv_keeps_a_group_in_one_fold(sets, tmp_path) -> None:
    groups = tmp_path / "groups.csv"
    rows = [f"a{i:03d}.png,patient{i % 4}" for i in range(N // 2)]
    groups.write_text("file,group\n" + "\n".join(rows) + "\n")
    result = audit(_quick(sets["half_a"], sets["half_b"], tmp_path / "out", groups=groups))
    folds: dict[str, set[int]] = {}
    for scan, fold in zip(result.cleaned.scans, result.cleaned.result.folds):
        folds.setdefault(scan.group, set()).add(int(fold))
    assert {g for g in folds if g.startswith("csv:")} == {f"csv:patient{k}" for k in range(4)}
    assert all(len(f) == 1 for f in folds.values())
    bad = tmp_path / "bad.csv"
    bad.write_text("name,patient\na000.png,1\n")
    with pytest.raises(AuditError, match="columns 'file' and 'group'"):
        audit(_quick(sets["half_a"], sets["half_b"], tmp_path / "o2", groups=bad))
    one = tmp_path / "one.csv"
    names = [p.name for p in [*_first(sets["half_a"], N), *_first(sets["half_b"], N)]]
    one.write_text("file,group\n" + "".join(f"{n},everyone\n" for n in names))
    with pytest.raises(AuditError, match="every scan is in one group"):
        audit(_quick(sets["half_a"], sets["half_b"], tmp_path / "o3", groups=one))


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="permutatons"):
        AuditConfig(cleaned="a", reference="b", permutatons=10)
    with pytest.raises(ValidationError, match="fail_above"):
        AuditConfig(cleaned="a", reference="b", fail_above=1.5)


@pytest.mark.skipif(browser() is None, reason="no Chromium/Chrome (apt-get install chromium)")
def test_audit_html_renders_in_headless_chromium(power, sets, tmp_path) -> None:
    path = sets["root"] / "power" / "audit.html"
    result = load(path, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    decoded = images_decoded(result.stdout)
    assert decoded, "the page's load handler did not run"
    ok, total = decoded
    assert total == 14 and ok == total
    assert "Uncaught" not in result.stderr


def test_the_command_exits_1_above_fail_above_and_0_below(sets, tmp_path) -> None:
    from typer.testing import CliRunner

    from annot_denoise.cli import app

    fast = ["--permutations", "99", "--bootstrap", "200", "--probe-size", "160"]
    fast += ["--no-repair-control", "--no-residue", "--no-progress", "--fail-above", "0.9"]
    runner = CliRunner()
    seen = runner.invoke(
        app, ["audit", str(sets["raw"]), str(sets["clean"]), "-o", str(tmp_path / "a"), *fast]
    )
    assert seen.exit_code == 1, seen.output
    assert "lower bound" in seen.output and "above --fail-above 0.9" in seen.output
    assert (tmp_path / "a" / "audit.html").is_file() and (tmp_path / "a" / "audit.json").is_file()
    same = runner.invoke(
        app, ["audit", str(sets["half_a"]), str(sets["half_b"]), "-o", str(tmp_path / "b"), *fast]
    )
    assert same.exit_code == 0, same.output
    assert "verdict:" in same.output
    few = tmp_path / "few"
    shutil.copytree(sets["half_a"], few, ignore=lambda d, names: sorted(names)[3:])
    short = runner.invoke(
        app, ["audit", str(few), str(sets["half_b"]), "-o", str(tmp_path / "c"), *fast]
    )
    errors = [line for line in short.output.splitlines() if line.startswith("error:")]
    assert short.exit_code == 1 and len(errors) == 1, short.output
