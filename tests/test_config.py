"""Tests for the training config: defaults, YAML, ``--set`` overrides and readable errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from annot_denoise.config import (
    ConfigError,
    TrainConfig,
    commented_defaults,
    dump_config,
    load_config,
    validate_config,
)


def write_yaml(tmp_path: Path, text: str, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# --------------------------------------------------------------------------- valid configs


def test_defaults_validate() -> None:
    defaults = TrainConfig()
    assert validate_config({}) == defaults
    assert TrainConfig.model_validate(defaults.model_dump()) == defaults
    assert load_config(None) == defaults
    assert load_config(None, []) == defaults


def test_load_yaml_file(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        "data:\n  root: scans/pairs\n  size: [64, 96]\n  patch: 48\n"
        "model:\n  arch: autoencoder\n"
        "train:\n  epochs: 5\n  max_steps: 100\n",
    )
    cfg = load_config(path)
    assert cfg.data.root == Path("scans/pairs")
    assert cfg.data.size == (64, 96)
    assert cfg.model.arch == "autoencoder"
    assert cfg.train.epochs == 5 and cfg.train.max_steps == 100
    # Everything not in the file keeps its default.
    assert cfg.optim == TrainConfig().optim
    assert cfg.train.batch_size == TrainConfig().train.batch_size


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write_yaml(tmp_path, "")) == TrainConfig()
    assert load_config(write_yaml(tmp_path, "# only a comment\n")) == TrainConfig()


@pytest.mark.parametrize(
    ("override", "section", "key", "value"),
    [
        ("train.epochs=3", "train", "epochs", 3),
        ("data.size=[256,384]", "data", "size", (256, 384)),
        ("data.size=[256, 384]", "data", "size", (256, 384)),
        ("optim.name=sgd", "optim", "name", "sgd"),
        ("train.amp=false", "train", "amp", False),
        ("data.cache=true", "data", "cache", True),
        ("train.max_steps=null", "train", "max_steps", None),
        ("train.max_minutes=2.5", "train", "max_minutes", 2.5),
        ("optim.lr=1e-3", "optim", "lr", 0.001),  # PyYAML reads 1e-3 as a string
        ("data.root=other/place", "data", "root", Path("other/place")),
        ("data.channels=1", "data", "channels", 1),
        (" train.epochs = 7", "train", "epochs", 7),
    ],
)
def test_override(override: str, section: str, key: str, value) -> None:
    cfg = load_config(None, [override])
    assert getattr(getattr(cfg, section), key) == value


def test_overrides_beat_the_file_and_apply_in_order(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "train:\n  epochs: 5\n  max_steps: 100\n")
    cfg = load_config(path, ["train.epochs=9", "train.max_steps=null", "train.epochs=11"])
    assert cfg.train.epochs == 11
    assert cfg.train.max_steps is None


def test_override_creates_a_section_the_file_lacks(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "train:\n  epochs: 5\n")
    cfg = load_config(path, ["optim.name=sgd"])
    assert cfg.optim.name == "sgd" and cfg.train.epochs == 5


def test_assignment_is_validated() -> None:
    cfg = TrainConfig()
    with pytest.raises(ValidationError):
        cfg.train.epochs = 0


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "overrides", "key", "reason"),
    [
        ("trainn:\n  epochs: 3\n", [], "trainn", "unknown key"),
        ("trian:\n  epochs: 3\n", [], "trian", "unknown key"),
        ("train:\n  epoch: 3\n", [], "train.epoch", "unknown key"),
        ("", ["trian.epochs=3"], "trian", "unknown key"),
        ("", ["train.epoch=3"], "train.epoch", "unknown key"),
        ("", ["train.epochs=abc"], "train.epochs", "integer"),
        ("train:\n  epochs: abc\n", [], "train.epochs", "integer"),
        ("", ["train.epochs=3.5"], "train.epochs", "integer"),
        ("", ["train.batch_size=0"], "train.batch_size", "greater than 0"),
        ("", ["data.val_split=1.5"], "data.val_split", "less than 1"),
        ("", ["data.size=[8,8]"], "data.size", "at least 16"),
        ("", ["data.size=64"], "data.size", "tuple"),
        ("", ["data.size=[16,16,16]"], "data.size", "at most 2"),
        ("", ["data.channels=2"], "data.channels", "1 or 3"),
        ("", ["optim.name=adam"], "optim.name", "'sgd' or 'adamw'"),
        ("train: 3\n", [], "train", "dictionary"),
        # Values that validate as numbers but no run can use.
        ("optim:\n  lr: .inf\n", [], "optim.lr", "finite"),
        ("", ["optim.lr=.nan"], "optim.lr", "finite"),
        ("", ["loss.alpha=.inf"], "loss.alpha", "finite"),
        ("", ["train.max_minutes=.inf"], "train.max_minutes", "finite"),
        ("", ["data.size=[100000,100000]"], "data.size", "at most"),
        ("", ["data.patch=100000"], "data.patch", "less than or equal"),
        ("", ["train.seed=18446744073709551616"], "train.seed", "less than or equal"),
        ("", ["data.size=[96,128]", "data.patch=256"], "data", "data.patch 256 is larger"),
    ],
)
def test_error_names_file_and_key(
    tmp_path: Path, text: str, overrides: list[str], key: str, reason: str
) -> None:
    path = write_yaml(tmp_path, text)
    message = config_error(path, overrides)
    # A bad value given on the command line is blamed on --set, not on the file.
    where = "--set" if overrides else f"{path}:"
    assert message.startswith(f"{where} {key}: "), message
    assert reason in message


def test_invalid_arch_lists_the_choices(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "model:\n  arch: resnet\n")
    message = config_error(path)
    assert message.startswith(f"{path}: model.arch: ")
    assert "'autoencoder'" in message and "'unet'" in message
    assert "resnet" in message


def test_bad_value_is_echoed(tmp_path: Path) -> None:
    message = config_error(write_yaml(tmp_path, ""), ["train.batch_size=-4"])
    assert "(got -4)" in message


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "train:\n  epochs: 0\n  batch_size: 0\nmodel:\n  arch: resnet\n")
    lines = config_error(path).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "model.arch",
        "train.epochs",
        "train.batch_size",
    ]
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_error_without_a_file_names_the_override() -> None:
    assert config_error(None, ["train.epochs=0"]).startswith("--set train.epochs: ")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "train: [\n  epochs: 3\n")
    message = config_error(path)
    assert message.startswith(f"{path}: not valid YAML")
    assert re.search(r"line \d+", message)


@pytest.mark.parametrize("text", ["- train\n- model\n", "just words\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write_yaml(tmp_path, text)
    assert config_error(path) == f"{path}: expected a mapping of sections at the top level"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(path)
    assert message.startswith(f"{path}: cannot read config")
    assert "No such file" in message


def test_folder_instead_of_file(tmp_path: Path) -> None:
    assert config_error(tmp_path).startswith(f"{tmp_path}: cannot read config")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  epochs: 3  # café\n".encode("latin-1"))
    assert config_error(path).startswith(f"{path}: ")


@pytest.mark.parametrize("override", ["train.epochs=true", "train.workers=no", "loss.alpha=yes"])
def test_boolean_for_a_number_is_an_error(tmp_path: Path, override: str) -> None:
    path = write_yaml(tmp_path, "")
    key = override.split("=")[0]
    assert config_error(path, [override]).startswith(f"--set {key}: ")


@pytest.mark.parametrize("override", ["foo", "=3", "", "  =x"])
def test_malformed_override(override: str) -> None:
    message = config_error(None, [override])
    assert message.startswith(f"--set {override!r}: ")
    assert "key=value" in message


def test_override_below_a_value(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "train:\n  epochs: 5\n")
    message = config_error(path, ["train.epochs.x=1"])
    assert message.startswith("--set 'train.epochs.x=1': ")
    assert "'epochs' is a value, not a section" in message
    # Without a value in the way, the same override is an ordinary type error.
    message = config_error(write_yaml(tmp_path, "", "empty.yaml"), ["train.epochs.x=1"])
    assert message.startswith("--set train.epochs: ")


def test_override_value_that_is_not_yaml() -> None:
    message = config_error(None, ["train.epochs=["])
    assert message.startswith("--set 'train.epochs=[': cannot parse the value")


# --------------------------------------------------------------------------- writing configs


def test_commented_defaults_is_the_defaults() -> None:
    text = commented_defaults()
    assert validate_config(yaml.safe_load(text)) == TrainConfig()


def test_commented_defaults_comments_every_key() -> None:
    key_lines = [line for line in commented_defaults().splitlines() if line.startswith("  ")]
    described = {
        (section, name): info.description
        for section, field in TrainConfig.model_fields.items()
        for name, info in field.annotation.model_fields.items()
    }
    assert len(key_lines) == len(described)
    for line in key_lines:
        setting, sep, comment = line.partition(" # ")
        assert sep and comment.strip(), line
        assert setting.strip().split(":")[0] in {name for _, name in described}
    for (_, name), description in described.items():
        assert description, f"{name} has no description"
        assert any(
            line.strip().startswith(f"{name}:") and line.endswith(f"# {description}")
            for line in key_lines
        )


def test_commented_defaults_sections_in_model_order() -> None:
    sections = [
        line[:-1]
        for line in commented_defaults().splitlines()
        if line and not line.startswith(("#", " "))
    ]
    assert sections == list(TrainConfig.model_fields)


def test_commented_defaults_loads_as_a_config_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, commented_defaults())
    assert load_config(path, ["train.epochs=2"]).train.epochs == 2


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [
            "data.root=/abs/scans",
            "data.size=[64,96]",
            "data.patch=null",
            "data.channels=1",
            "model.arch=autoencoder",
            "optim.name=sgd",
            "optim.lr=1e-3",
            "train.max_steps=5",
            "train.max_minutes=1.5",
            "output.dir=runs/other",
            "output.tensorboard=false",
        ],
    ],
)
def test_dump_config_round_trips(tmp_path: Path, overrides: list[str]) -> None:
    cfg = load_config(None, overrides)
    text = dump_config(cfg)
    assert validate_config(yaml.safe_load(text)) == cfg
    assert load_config(write_yaml(tmp_path, text)) == cfg


# --------------------------------------------------------------------------- hostile YAML


def laughs(levels: int = 9) -> str:
    """ "Billion laughs": each level an alias list of the one below, 9**levels values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nmodel:\n  width: *a{levels}\n"


def measured(call) -> tuple[Exception | None, float, float]:
    """(exception raised, seconds, peak MB allocated by Python) of ``call()``."""
    import time
    import tracemalloc

    tracemalloc.start()
    start, raised = time.perf_counter(), None
    try:
        call()
    except Exception as exc:
        raised = exc
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return raised, seconds, peak


def test_billion_laughs_is_refused_at_once(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, laughs())
    raised, seconds, peak = measured(lambda: load_config(path))
    assert isinstance(raised, ConfigError), raised
    assert str(raised).startswith(f"{path}: refused: ")
    assert "aliases expand" in str(raised)
    assert seconds < 0.5 and peak < 20


def test_billion_laughs_in_an_override_is_refused() -> None:
    # One flow value: each level holds the level below once by anchor, then by 8 aliases.
    value = "&a0 [x, x, x, x, x, x, x, x, x]"
    for i in range(1, 7):
        value = f"&a{i} [{value}, " + ", ".join([f"*a{i - 1}"] * 8) + "]"
    raised, seconds, peak = measured(lambda: load_config(None, [f"model.width={value}"]))
    assert isinstance(raised, ConfigError), raised
    assert str(raised).startswith("--set 'model.width=") and "aliases expand" in str(raised)
    assert len(str(raised)) < 300 and seconds < 0.5 and peak < 20


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("train: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
        ("train: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "nested more than"),
        ("a: &a [*a]\n", "refers to a node that contains it"),
        (
            "".join(f"l{i}: &l{i} [*l{i - 1}]\n" if i else "l0: &l0 [x]\n" for i in range(300)),
            "nested more than",
        ),
        ("model:\n  width: " + "1" * 5000 + "\n", "not valid YAML"),
    ],
)
def test_absurd_yaml_is_one_line_naming_the_file(tmp_path: Path, text: str, reason: str) -> None:
    path = write_yaml(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: ") and reason in message
    assert len(message.splitlines()) == 1 and len(message) < 300


def test_an_oversized_file_is_refused_unparsed(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "train:\n  epochs: 3\n" + "# padding\n" * 200_000)
    message = config_error(path)
    assert message.startswith(f"{path}: refused: larger than")


def test_harmless_anchors_still_load(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        "loss:\n  alpha: &weight 30.0\n  content_weight: *weight\n"
        "data:\n  colors: &palette [white, cyan]\n  patch: 64\n",
    )
    cfg = load_config(path, ["data.colors=[yellow, &c cyan, *c]"])
    assert cfg.loss.alpha == cfg.loss.content_weight == 30.0
    assert cfg.data.colors == ["yellow", "cyan", "cyan"]


def test_huge_values_are_not_printed(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        "model:\n  width: 0x" + "f" * 20_000 + "\n  arch: '" + "x" * 100_000 + "'\n",
    )
    message = config_error(path)
    assert [line.split(": ")[1] for line in message.splitlines()] == ["model.arch", "model.width"]
    assert len(message) < 600
    assert "integer of 80000 bits" in message


def test_a_flood_of_problems_is_summarised(tmp_path: Path) -> None:
    colours = "[" + ", ".join(["1"] * 500) + "]"
    lines = config_error(None, [f"data.colors={colours}"]).splitlines()
    assert len(lines) <= 11
    assert lines[-1] == "... and 490 more problems"
