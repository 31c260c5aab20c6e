"""No output ever lands in the input tree: links, `..`, hard links and mounts.

`clean` reads INPUT (and `--masks`) and writes OUT. Whatever the layout of the
three, the bytes under INPUT and the masks folder never change and nothing new
appears there; a write that would land there is one line naming it, and the
exit code says so.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standins import BrightMarksInTwoStages

from annot_denoise.clean import CleanError, clean
from annot_denoise.config import CleanConfig
from annot_denoise.inference import Restorer
from annot_denoise.io import read_image, write_image


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"))


def make_scans(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a.png", "sub/b.png", "sub/deep/c.png"):
        image = (rng.random((24, 32)) * 200).astype(np.uint8)
        image[12, 4:28] = 255  # a bright 'mark' that cleaning changes
        write_image(root / name, image)


def tree_state(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed) with a hash of its bytes."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[key] = "link -> " + os.readlink(path)
            elif path.is_file():
                state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                state[key] = "folder"
    return state


def test_a_linked_folder_in_the_output_is_never_written_through(
    tmp_path: Path, restorer: Restorer
) -> None:
    """The reported failure: OUT/sub is a link to INPUT/sub; --overwrite wrote the
    cleaned scans over the originals, and without it they were 'already done'."""
    scans, out = tmp_path / "scans", tmp_path / "out"
    make_scans(scans)
    out.mkdir()
    (out / "sub").symlink_to(scans / "sub", target_is_directory=True)
    before = tree_state(scans)
    for overwrite in (True, False):
        report = clean(CleanConfig(inputs=scans, out=out, overwrite=overwrite), restorer)
        assert tree_state(scans) == before
        assert report.processed + report.skipped == 1  # a.png, outside the link
        assert len(report.failed) == 2  # never "already done"
        assert all("/sub/" in line and "resolves into" in line for line in report.failed)
    assert (out / "a.png").is_file()


def test_a_hard_link_to_an_input_is_not_a_finished_output(
    tmp_path: Path, restorer: Restorer
) -> None:
    scans, out = tmp_path / "scans", tmp_path / "out"
    make_scans(scans)
    out.mkdir()
    os.link(scans / "a.png", out / "a.png")
    before = tree_state(scans)
    for overwrite in (True, False):
        report = clean(CleanConfig(inputs=scans, out=out, overwrite=overwrite), restorer)
        assert tree_state(scans) == before
        assert len(report.failed) == 1 and "a.png" in report.failed[0]
        assert "input file" in report.failed[0]


@pytest.mark.parametrize("spelling", ["link", "dotdot", "link_inside"])
def test_an_output_folder_that_resolves_into_the_input_is_refused(
    tmp_path: Path, restorer: Restorer, spelling: str
) -> None:
    scans = tmp_path / "scans"
    make_scans(scans)
    out = {
        "link": tmp_path / "out",
        "dotdot": tmp_path / "elsewhere" / ".." / "scans" / "sub" / "new",
        "link_inside": tmp_path / "out" / "deeper",
    }[spelling]
    (tmp_path / "elsewhere").mkdir()
    if spelling in ("link", "link_inside"):
        (tmp_path / "out").symlink_to(scans / "sub", target_is_directory=True)
    before = tree_state(scans)
    with pytest.raises(CleanError, match="input folder"):
        clean(CleanConfig(inputs=scans, out=out, overwrite=True), restorer)
    assert tree_state(scans) == before


def test_a_bind_mount_of_the_input_inside_the_output_is_refused(
    tmp_path: Path, restorer: Restorer
) -> None:
    scans, out = tmp_path / "scans", tmp_path / "out"
    make_scans(scans)
    (out / "sub").mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "--bind", str(scans / "sub"), str(out / "sub")], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("bind mounts need privileges this machine does not give")
    try:
        before = tree_state(scans)
        report = clean(CleanConfig(inputs=scans, out=out, overwrite=True), restorer)
        assert tree_state(scans) == before
        assert len(report.failed) == 2
    finally:
        subprocess.run(["umount", str(out / "sub")], check=False)


def test_the_masks_folder_is_protected_too(tmp_path: Path, restorer: Restorer) -> None:
    scans, masks, out = tmp_path / "scans", tmp_path / "masks", tmp_path / "out"
    make_scans(scans)
    for name in ("a.png", "sub/b.png", "sub/deep/c.png"):
        write_image(masks / name, (read_image(scans / name) == 255).astype(np.uint8) * 255)
    out.mkdir()
    (out / "sub").symlink_to(masks / "sub", target_is_directory=True)
    before = tree_state(masks)
    report = clean(
        CleanConfig(inputs=scans, out=out, masks=masks, save_mask=True, overwrite=True), restorer
    )
    assert tree_state(masks) == before
    assert len(report.failed) == 2 and report.processed == 1


# --------------------------------------------------------------------------- properties
# A random layout of INPUT, OUT and the masks folder: where each lies, which
# folders of OUT are links (into INPUT, the masks, or elsewhere), which outputs
# already exist as links or hard links to inputs, and how OUT is spelled.

FOLDERS = ["", "sub", "sub/deep"]
layouts = st.fixed_dictionaries(
    {
        "out_in": st.sampled_from(["beside", "inside_input", "inside_masks", "input_itself"]),
        "out_spelling": st.sampled_from(["plain", "dotdot", "via_link"]),
        "linked": st.lists(
            st.tuples(st.sampled_from(["sub", "sub/deep", "other"]), st.sampled_from(FOLDERS)),
            max_size=2,
        ),
        "linked_to": st.sampled_from(["input", "masks", "elsewhere"]),
        "file_links": st.lists(
            st.tuples(st.sampled_from(["a.png", "sub/b.png"]), st.sampled_from(["sym", "hard"])),
            max_size=2,
        ),
        "masks": st.sampled_from([None, "separate", "input_itself", "inside_input"]),
        "overwrite": st.booleans(),
        "save_mask": st.booleans(),
    }
)


def build(tmp: Path, layout: dict) -> tuple[Path, Path, Path | None]:
    scans = tmp / "scans"
    make_scans(scans)
    (tmp / "elsewhere").mkdir()
    masks = {
        None: None,
        "separate": tmp / "masks",
        "input_itself": scans,
        "inside_input": scans / "masks",
    }[layout["masks"]]
    if masks is not None:
        for name in ("a.png", "sub/b.png", "sub/deep/c.png"):
            mark = (read_image(scans / name) == 255).astype(np.uint8) * 255
            write_image(masks / f"{name}.mask.png", mark)
    base = {
        "beside": tmp / "out",
        "inside_input": scans / "sub" / "out",
        "inside_masks": (masks or tmp / "masks2") / "out",
        "input_itself": scans,
    }[layout["out_in"]]
    out = base
    if layout["out_spelling"] == "dotdot":
        out = tmp / "elsewhere" / ".." / base.relative_to(tmp)
    elif layout["out_spelling"] == "via_link":
        (tmp / "outlink").symlink_to(base.parent, target_is_directory=True)
        out = tmp / "outlink" / base.name
    base.mkdir(parents=True, exist_ok=True)
    target_root = {"input": scans, "masks": masks or scans, "elsewhere": tmp / "elsewhere"}
    for folder, target in layout["linked"]:
        link, to = base / folder, target_root[layout["linked_to"]] / target
        if not link.exists() and not link.is_symlink() and to.is_dir():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(to, target_is_directory=True)
    for name, kind in layout["file_links"]:
        link = base / name
        inside = [r.resolve() for r in (scans, masks) if r is not None]
        if any(link.parent.resolve().is_relative_to(r) for r in inside):
            continue  # the setup itself must not add files to the inputs
        if link.parent.is_dir() and not link.exists() and not link.is_symlink():
            if kind == "sym":
                link.symlink_to(scans / name)
            else:
                os.link(scans / name, link)
    return scans, out, masks


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(layout=layouts)
def test_no_layout_changes_the_input_tree(tmp_path_factory, restorer, layout) -> None:
    tmp = tmp_path_factory.mktemp("layout")
    scans, out, masks = build(tmp, layout)
    protected = [scans] + ([masks] if masks is not None and masks != scans else [])
    before = [tree_state(p) for p in protected]
    try:
        report = clean(
            CleanConfig(
                inputs=scans,
                out=out,
                overwrite=layout["overwrite"],
                masks=masks,
                save_mask=layout["save_mask"] and masks is None,
            ),
            restorer,
        )
    except CleanError:
        report = None
    assert [tree_state(p) for p in protected] == before
    if report is not None:
        # Every scan is cleaned, already done, or one line saying why not.
        done = report.processed + report.skipped + len(report.failed)
        assert done == 3


def test_synth_never_writes_through_a_link_into_its_clean_scans(tmp_path: Path) -> None:
    from annot_denoise.synth.pipeline import SynthError, synth

    scans, out = tmp_path / "scans", tmp_path / "out"
    make_scans(scans)
    out.mkdir()
    (out / "annotated").symlink_to(scans / "sub", target_is_directory=True)
    before = tree_state(scans)
    report = synth(scans, out)
    assert tree_state(scans) == before
    assert len(report.failed) == 3 and all("resolves into" in line for line in report.failed)
    (tmp_path / "link").symlink_to(scans / "sub", target_is_directory=True)
    with pytest.raises(SynthError, match="input folder"):
        synth(scans, tmp_path / "link" / "new")
    assert tree_state(scans) == before
