"""The docs and examples stay true to the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from annot_denoise.config import TrainConfig, load_config, reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current() -> None:
    assert reference_markdown() in (ROOT / "docs" / "config.md").read_text()


def test_postprocess_reference_is_current() -> None:
    from annot_denoise.inference.postprocess import reference_markdown as steps

    assert steps() in (ROOT / "docs" / "postprocess.md").read_text()


def test_command_reference_is_current() -> None:
    from annot_denoise.cli import reference_markdown as commands

    assert commands() in (ROOT / "docs" / "cli.md").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_validate(path: Path) -> None:
    assert isinstance(load_config(path), TrainConfig)


def test_readme_names_every_command_and_config_key() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in (
        "synth",
        "train",
        "eval",
        "clean",
        "demo",
        "drawers",
        "init-config",
        "phantoms",
        "audit",
    ):
        assert f"annot-denoise {command}" in readme, command
    assert "make demo" in readme and "make test" in readme
