"""Cleaning folders: mirrored outputs of the same kind, resume, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from annot_denoise.clean import CleanError, clean
from annot_denoise.config import CleanConfig
from annot_denoise.inference import Restorer
from annot_denoise.io import read_image, write_image
from annot_denoise.training.checkpoint import load_model


@pytest.fixture(scope="module")
def restorer(trained_run: Path) -> Restorer:
    model, ckpt = load_model(trained_run / "best.pt")
    return Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """A tree of scans of every kind we promise to preserve."""
    root = tmp_path / "scans"
    rng = np.random.default_rng(0)
    write_image(root / "grey.png", (rng.random((70, 90)) * 255).astype(np.uint8))
    write_image(root / "sub" / "rgb.png", (rng.random((50, 61, 3)) * 255).astype(np.uint8))
    write_image(
        root / "sub" / "deep" / "scan16.tif", (rng.random((40, 33)) * 65535).astype(np.uint16)
    )
    rgba = (rng.random((30, 30, 4)) * 255).astype(np.uint8)
    write_image(root / "alpha.png", rgba)
    write_image(root / "photo.jpg", (rng.random((64, 48, 3)) * 255).astype(np.uint8))
    write_image(root / "name with spaces é.png", np.zeros((20, 20), np.uint8))
    return root


def test_outputs_mirror_inputs(scans: Path, tmp_path: Path, restorer: Restorer) -> None:
    before = {p: p.read_bytes() for p in scans.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    report = clean(CleanConfig(inputs=scans, out=out), restorer)
    assert report.ok and report.processed == 6
    for src in before:
        dst = out / src.relative_to(scans)
        a, b = read_image(src), read_image(dst)
        assert a.shape == b.shape and a.dtype == b.dtype, src.name
    assert np.array_equal(
        read_image(out / "alpha.png")[..., 3], read_image(scans / "alpha.png")[..., 3]
    )
    # The input tree is untouched and holds nothing new.
    assert {p: p.read_bytes() for p in scans.rglob("*") if p.is_file()} == before
    record = json.loads((out / "clean_run.json").read_text())
    assert record["processed"] == 6
    # Where the time went, stage by stage, as the report says.
    assert {"decode", "encode", "postprocess"} <= set(record["stages"])
    assert record["stages"] == report.stages
    assert record["batch_size"] == restorer.batch_size  # none given: the restorer's


def test_rerun_skips_done_and_overwrite_redoes(scans: Path, tmp_path: Path, restorer) -> None:
    out = tmp_path / "out"
    clean(CleanConfig(inputs=scans, out=out), restorer)
    (out / "grey.png").unlink()
    report = clean(CleanConfig(inputs=scans, out=out), restorer)
    assert (report.processed, report.skipped) == (1, 5)
    report = clean(CleanConfig(inputs=scans, out=out, overwrite=True), restorer)
    assert (report.processed, report.skipped) == (6, 0)


def test_bad_files_reported_rest_processed(scans: Path, tmp_path: Path, restorer) -> None:
    (scans / "empty.png").write_bytes(b"")
    (scans / "notes.png").write_text("not an image")
    (scans / "cut.png").write_bytes((scans / "grey.png").read_bytes()[:200])
    report = clean(CleanConfig(inputs=scans, out=tmp_path / "out", batch_size=2), restorer)
    assert report.processed == 6 and len(report.failed) == 3
    for name in ("empty.png", "notes.png", "cut.png"):
        assert any(name in line for line in report.failed)
        assert not (tmp_path / "out" / name).exists()
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no temporary files left


def test_single_file_input(scans: Path, tmp_path: Path, restorer) -> None:
    report = clean(CleanConfig(inputs=scans / "grey.png", out=tmp_path / "one"), restorer)
    assert report.processed == 1 and (tmp_path / "one" / "grey.png").is_file()


def test_refuses_unsafe_output_folders(scans: Path, tmp_path: Path, restorer) -> None:
    with pytest.raises(CleanError, match="is the input folder"):
        clean(CleanConfig(inputs=scans, out=scans), restorer)
    with pytest.raises(CleanError, match="inside the input folder"):
        clean(CleanConfig(inputs=scans, out=scans / "sub" / "out"), restorer)
    with pytest.raises(CleanError, match="no such file"):
        clean(CleanConfig(inputs=tmp_path / "nope", out=tmp_path / "o"), restorer)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CleanError, match="no images found"):
        clean(CleanConfig(inputs=tmp_path / "empty", out=tmp_path / "o"), restorer)


def test_residual_models_keep_untouched_detail(restorer: Restorer) -> None:
    # A zero-correction residual network must return the input exactly, at any size.
    import copy

    quiet = copy.deepcopy(restorer)
    torch.nn.init.zeros_(quiet.model.head.weight)
    torch.nn.init.zeros_(quiet.model.head.bias)
    rng = np.random.default_rng(1)
    for image in [
        (rng.random((301, 217)) * 255).astype(np.uint8),
        (rng.random((37, 45, 3)) * 65535).astype(np.uint16),
    ]:
        assert np.array_equal(quiet.restore([image])[0].image, image)


def test_save_mask_needs_a_mask_model(scans: Path, tmp_path: Path, restorer) -> None:
    with pytest.raises(CleanError, match="no mask head"):
        clean(CleanConfig(inputs=scans, out=tmp_path / "out", save_mask=True), restorer)
    assert not (tmp_path / "out").exists()


def test_save_mask_and_report(scans: Path, tmp_path: Path, mask_run: Path) -> None:
    import csv

    from annot_denoise.clean import mask_path

    model, ckpt = load_model(mask_run / "best.pt")
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    out = tmp_path / "out"
    report = clean(CleanConfig(inputs=scans, out=out, save_mask=True, report_csv=True), r)
    assert report.ok
    for dst in report.outputs:
        mask = read_image(mask_path(dst))
        assert mask.shape == read_image(dst).shape[:2] and set(np.unique(mask)) <= {0, 255}
    rows = list(csv.DictReader((out / "clean_report.csv").open()))
    assert len(rows) == 6
    assert all(0 <= float(r["changed_fraction"]) <= float(r["mask_fraction"]) for r in rows)
    # Masks are not mistaken for inputs or outputs on a rerun.
    assert clean(CleanConfig(inputs=scans, out=out, save_mask=True), r).skipped == 6


def test_batches_computed_side_by_side_come_out_in_order(tmp_path: Path) -> None:
    """Several streams (the CPU default is two) give each file its own result."""
    from annot_denoise.phantom import make_phantom
    from annot_denoise.pretrained import resolve_model
    from annot_denoise.runtime import inference_streams, intra_op_threads
    from annot_denoise.synth.pipeline import annotate, item_rng

    model, ckpt = load_model(resolve_model(None))
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    root = tmp_path / "scans"
    images = {}
    for i in range(7):
        scan = make_phantom(96 + 16 * i, 128, np.random.default_rng(i))
        images[f"s{i}.png"] = annotate(scan, "mixed", item_rng(0, str(i), 0))[1]
        write_image(root / f"s{i}.png", images[f"s{i}.png"])
    (root / "s3b.png").write_bytes(b"not a png")  # a failure between batches
    report = clean(CleanConfig(inputs=root, out=tmp_path / "out", batch_size=2, streams=3), r)
    assert report.processed == 7 and len(report.failed) == 1 and "s3b.png" in report.failed[0]
    streams, threads = inference_streams(torch.device("cpu"), 3)
    assert streams == 3
    removed = 0
    with intra_op_threads(threads):  # the same arithmetic as inside clean
        for name, image in images.items():
            expected = r.restore([image])[0].image
            removed += not np.array_equal(expected, image)
            assert np.array_equal(read_image(tmp_path / "out" / name), expected), name
    # Outputs differ from inputs, so order mix-ups would show (which scans the model
    # finds marks on is the weights' business: these phantoms are tiny).
    assert removed >= 4
    record = json.loads((tmp_path / "out" / "clean_run.json").read_text())
    assert (record["streams"], record["threads_per_stream"]) == (3, threads)


def test_streams_never_outnumber_batches() -> None:
    from annot_denoise.runtime import inference_streams

    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    assert inference_streams(cpu, 4, batches=1) == (1, threads)
    assert inference_streams(cpu, 1) == (1, threads)
    assert inference_streams(torch.device("cuda"), None)[0] == 1
    assert inference_streams(torch.device("mps"), 2)[0] == 1  # not safe from two threads
    streams, per = inference_streams(cpu, None, batches=10)
    assert streams == min(2, threads) and per == max(1, threads // streams)


def test_given_masks_replace_detection(tmp_path: Path) -> None:
    from annot_denoise.clean import mask_path
    from annot_denoise.phantom import make_phantom
    from annot_denoise.pretrained import resolve_model
    from annot_denoise.synth.pipeline import annotate

    model, ckpt = load_model(resolve_model(None))
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    root = tmp_path / "scans"
    given = root / "masks"  # inside the input folder: not cleaned as scans
    pairs = {}
    for i, (name, mask_name) in enumerate(
        [("a.png", "a.png"), ("sub/b.png", "sub/b.png.mask.png"), ("c.tif", "c.png")]
    ):
        scan = make_phantom(120, 160, np.random.default_rng(i))
        _, annotated, mask, _ = annotate(scan, "calipers", np.random.default_rng(i))
        write_image(root / name, annotated)
        write_image(given / mask_name, mask.astype(np.uint8) * 255)
        pairs[name] = (annotated, mask)
    write_image(root / "no_mask.png", pairs["a.png"][0])
    write_image(root / "small_mask.png", pairs["a.png"][0])
    write_image(given / "small_mask.png", np.zeros((10, 10), np.uint8))

    report = clean(
        CleanConfig(inputs=root, out=tmp_path / "out", masks=given, save_mask=True, streams=1), r
    )
    assert report.processed == 3 and len(report.failed) == 2
    assert any("no_mask.png: no mask for it" in line for line in report.failed)
    assert any("small_mask.png" in line and "10x10" in line for line in report.failed)
    assert not (tmp_path / "out" / "masks").exists()
    for name, (annotated, mask) in pairs.items():
        out = read_image(tmp_path / "out" / name)
        assert np.array_equal(out, r.inpaint([annotated], [mask])[0].image), name
        hole = read_image(mask_path(tmp_path / "out" / name)) > 0
        assert hole[mask].all() and not np.array_equal(out[mask], annotated[mask])
        assert np.array_equal(out[~hole], annotated[~hole])  # the rest bit for bit
    record = json.loads((tmp_path / "out" / "clean_run.json").read_text())
    assert record["masks"] == str(given)


def test_given_masks_need_a_model_that_takes_them(scans: Path, tmp_path: Path, restorer) -> None:
    with pytest.raises(CleanError, match="cannot inpaint given masks"):
        clean(CleanConfig(inputs=scans, out=tmp_path / "out", masks=tmp_path), restorer)


def test_given_masks_beside_the_scans_are_not_scans(tmp_path: Path) -> None:
    from annot_denoise.clean import mask_path
    from annot_denoise.pretrained import resolve_model

    model, ckpt = load_model(resolve_model(None))
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    rng = np.random.default_rng(0)
    image = (rng.random((64, 80)) * 255).astype(np.uint8)
    mask = np.zeros((64, 80), np.uint8)
    mask[30:33, 10:70] = 255
    write_image(tmp_path / "in" / "a.png", image)
    write_image(mask_path(tmp_path / "in" / "a.png"), mask)
    report = clean(
        CleanConfig(inputs=tmp_path / "in", out=tmp_path / "out", masks=tmp_path / "in"), r
    )
    assert report.processed == 1 and report.ok
    assert not mask_path(tmp_path / "out" / "a.png").exists()
    with pytest.raises(CleanError, match="no images found besides the masks"):
        clean(
            CleanConfig(
                inputs=tmp_path / "in" / "a.png.mask.png",
                out=tmp_path / "o2",
                masks=tmp_path / "in",
            ),
            r,
        )
    # --save-mask into the masks folder would overwrite them.
    (tmp_path / "in2").mkdir()
    with pytest.raises(CleanError, match="overwrite the given masks"):
        clean(
            CleanConfig(
                inputs=tmp_path / "in", out=tmp_path / "in2", masks=tmp_path / "in2", save_mask=True
            ),
            r,
        )


def test_a_scan_is_never_its_own_mask(tmp_path: Path) -> None:
    """--masks INPUT with no mask files there: each scan was taken as its own mask
    (most of every image repainted, exit 0). Now each is a 'no mask' line."""
    from standins import BrightMarksInTwoStages

    r = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    for name in ("a.png", "sub/b.jpg", "c.tif"):
        write_image(tmp_path / "in" / name, (rng.random((40, 50, 3)) * 255).astype(np.uint8))
    # scan.jpg -> scan.png would find another scan of the same stem: not a mask either.
    write_image(tmp_path / "in" / "sub" / "b.png", np.zeros((40, 50), np.uint8))
    report = clean(
        CleanConfig(inputs=tmp_path / "in", out=tmp_path / "out", masks=tmp_path / "in"), r
    )
    assert report.processed == 0 and len(report.failed) == 4
    assert all("no mask for it" in line for line in report.failed)
    assert any("b.png is a scan, not a mask" in line for line in report.failed)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.suffix != ".json"]


def test_a_mask_must_be_one_channel_or_equal_channels(tmp_path: Path) -> None:
    from standins import BrightMarksInTwoStages

    r = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    scan = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "in" / "colour.png", scan)
    write_image(tmp_path / "in" / "grey_rgb.png", scan)
    write_image(tmp_path / "masks" / "colour.png", scan)  # a scan given as a mask
    grey = np.zeros((40, 50, 3), np.uint8)
    grey[10:12, 5:45] = 255
    write_image(tmp_path / "masks" / "grey_rgb.png", grey)  # RGB with equal channels is fine
    report = clean(
        CleanConfig(inputs=tmp_path / "in", out=tmp_path / "out", masks=tmp_path / "masks"), r
    )
    assert report.processed == 1 and len(report.failed) == 1
    assert "colour.png" in report.failed[0] and "not a mask" in report.failed[0]


def test_an_output_is_reported_only_once_it_is_written(tmp_path: Path) -> None:
    import csv

    from standins import BrightMarksInTwoStages

    r = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "in" / name, (rng.random((30, 40)) * 255).astype(np.uint8))
    (tmp_path / "out" / "a.png").mkdir(parents=True)  # a folder where a.png must go
    report = clean(
        CleanConfig(inputs=tmp_path / "in", out=tmp_path / "out", overwrite=True, report_csv=True),
        r,
    )
    assert report.processed == 1 and len(report.failed) == 1 and "a.png" in report.failed[0]
    assert report.outputs == [tmp_path / "out" / "b.png"]
    with (tmp_path / "out" / "clean_report.csv").open() as fh:
        assert [row["image"] for row in csv.DictReader(fh)] == ["b.png"]
