"""What the command line shows when names and paths are hostile: one line each,
shown and never obeyed, and never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from annot_denoise.cli import app
from annot_denoise.io import write_image

EVIL = {
    "clear\x1b[2J\x1b[31m.png": "clear\\x1b[2J\\x1b[31m.png",
    "two\nerror: forged line.png": "two\\nerror: forged line.png",
    "[/red]closing.png": "[/red]closing.png",
    "[bold]opening.png": "[bold]opening.png",
    "bell\x07\u202eevil.png": "bell\\x07\\u202eevil.png",
}


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_no_traceback(output: str) -> None:
    assert "Traceback" not in output and 'File "' not in output, output


@pytest.fixture
def evil_folder(tmp_path: Path) -> Path:
    root = tmp_path / "scans"
    write_image(root / "good.png", np.full((40, 50), 90, np.uint8))
    for name in EVIL:  # "[/red]closing.png" is red]closing.png in a folder named "["
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(b"not an image at all")
    return root


def test_file_names_cannot_forge_lines_or_steer_the_terminal(
    evil_folder: Path, tmp_path: Path
) -> None:
    for command in (
        ["clean", str(evil_folder), "-o", str(tmp_path / "out")],
        ["synth", str(evil_folder), str(tmp_path / "synth")],
    ):
        result = CliRunner().invoke(app, [*command, "--no-progress"])
        assert result.exit_code == 1, result.output
        assert_no_traceback(result.output)
        assert "\x1b" not in result.output and "\x07" not in result.output
        assert "\u202e" not in result.output
        lines = error_lines(result.output)
        assert len(lines) == len(EVIL), lines
        for shown in EVIL.values():
            assert sum(shown in line for line in lines) == 1, (shown, lines)
        assert not any(line.startswith("error: forged") for line in result.output.splitlines())


@pytest.mark.parametrize("name", ["[/x]missing", "[bold]missing", "esc\x1b[31mmissing"])
def test_a_missing_input_with_markup_or_escapes_in_its_name_is_one_line(
    tmp_path: Path, name: str
) -> None:
    result = CliRunner().invoke(app, ["clean", str(tmp_path / name), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert_no_traceback(result.output)
    assert len(error_lines(result.output)) == 1 and "\x1b" not in result.output


def test_an_output_path_that_is_a_file_is_one_line(evil_folder: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"precious")
    pairs = tmp_path / "pairs"
    for sub in ("clean", "annotated"):
        write_image(pairs / sub / "a.png", np.full((40, 50), 90, np.uint8))
    for command in (
        ["clean", str(evil_folder), "-o", str(taken)],
        ["clean", str(evil_folder), "-o", str(taken / "below")],
        ["synth", str(evil_folder), str(taken)],
        ["eval", str(pairs), "-o", str(taken)],
    ):
        result = CliRunner().invoke(app, [*command, "--no-progress"])
        assert result.exit_code == 1, (command, result.output)
        assert_no_traceback(result.output)
        assert len(error_lines(result.output)) == 1, result.output
        assert str(taken) in result.output
    assert taken.read_bytes() == b"precious"


def test_eval_never_writes_its_report_among_the_pairs(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    for sub in ("clean", "annotated"):
        write_image(pairs / sub / "a.png", np.full((40, 50), 90, np.uint8))
    before = sorted(p.name for p in (pairs / "annotated").iterdir())
    result = CliRunner().invoke(app, ["eval", str(pairs), "-o", str(pairs / "annotated" / "r")])
    assert result.exit_code == 1 and "inside the pairs" in result.output, result.output
    assert sorted(p.name for p in (pairs / "annotated").iterdir()) == before


def test_an_unexpected_error_is_one_line_and_verbose_shows_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise TypeError("something nobody planned for\nsecond line")

    monkeypatch.setattr("annot_denoise.phantom.write_phantoms", broken)
    result = CliRunner().invoke(app, ["phantoms", str(tmp_path / "p")])
    assert result.exit_code == 3, result.output
    assert_no_traceback(result.output)
    assert error_lines(result.output) == [
        "error: unexpected TypeError: something nobody planned for (a bug in annot-denoise: "
        "please report it; --verbose shows where it happened)"
    ]
    result = CliRunner().invoke(app, ["--verbose", "phantoms", str(tmp_path / "p")])
    assert isinstance(result.exception, TypeError)
