"""YAML for configs, read with bounds: a config is a few dozen lines, so a file
over :data:`MAX_CONFIG_BYTES`, or YAML whose anchors and aliases expand past
:data:`MAX_YAML_NODES` values or :data:`MAX_YAML_DEPTH` levels, is refused before
anything is built from it ("billion laughs", a pipe that never ends)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_CONFIG_BYTES = 1 << 20
# A full config is about 60 values five levels deep; these leave a wide margin and
# stop "billion laughs" aliases before anything walks (or prints) their expansion.
MAX_YAML_NODES = 10_000
MAX_YAML_DEPTH = 16


class Refused(Exception):
    """YAML refused before it is built: too big, too deep, or self-referring."""


def read_text(path: Path) -> str:
    """The file's text, read no further than :data:`MAX_CONFIG_BYTES` (a pipe or
    /dev/zero never ends)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise Refused(f"cannot read config ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise Refused(
            f"refused: larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few dozen lines"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(f"not UTF-8 text (byte {exc.start})") from None


def load(text: str) -> Any:
    """``yaml.safe_load`` that measures the composed node graph before building it."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, 0, {}, set())
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError) as exc:  # e.g. an integer of 5000 digits
            raise Refused(f"not valid YAML ({str(exc).splitlines()[0][:160]})") from None
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's composer recurses once per level: stop before Python's stack does."""

    _level = 0

    def compose_node(self, parent, index):
        self._level += 1
        try:
            if self._level > MAX_YAML_DEPTH:
                raise Refused(_too_deep())
            return super().compose_node(parent, index)
        finally:
            self._level -= 1


def _measure(
    node: yaml.Node, depth: int, memo: dict[int, tuple[int, int]], active: set[int]
) -> tuple[int, int]:
    """(values, levels) of ``node`` as if every alias were expanded, without expanding:
    a node reached again through an alias reuses its memoised count."""
    if depth > MAX_YAML_DEPTH:
        raise Refused(_too_deep())
    if isinstance(node, yaml.ScalarNode):
        return 1, 0
    key = id(node)
    if key in memo:
        if depth + memo[key][1] > MAX_YAML_DEPTH:
            raise Refused(_too_deep())
        return memo[key]
    if key in active:
        raise Refused("refused: an alias refers to a node that contains it")
    active.add(key)
    size, height = 1, 0
    for child in _children(node):
        count, levels = _measure(child, depth + 1, memo, active)
        size, height = size + count, max(height, levels + 1)
        if size > MAX_YAML_NODES:
            raise Refused(
                f"refused: its anchors and aliases expand to more than {MAX_YAML_NODES} "
                "values; a config has a few dozen"
            )
    active.discard(key)
    memo[key] = (size, height)
    return size, height


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value)


def _too_deep() -> str:
    return f"refused: nested more than {MAX_YAML_DEPTH} levels deep; a config has five"


def problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one line: what and where."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem
