"""Post-processing: named, switchable steps between the network and the output.

A step is a small function over a :class:`Frame` with its constants in its own
config. ``STEPS`` maps each name to its functions, one per stage it acts in:

- ``detection``: after the detector, before inpainting: the detections are
  refined (two-stage models at native resolution; given masks are taken as
  they are);
- ``inpainting``: on each crop the inpainter painted (two-stage models at native
  resolution, and given masks);
- ``composition``: on the whole image, after inpainting (every mask-aware model).

Which steps run, in which order, is data: :class:`PostprocessConfig`, stored in
the checkpoint (the steps a model was validated with), recorded beside every
``clean`` and ``eval`` run, and overridable (``--postprocess``). With no steps
the output is the network's own repair inside its hole and the input, bit for
bit, everywhere else. docs/postprocess.md is generated from this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from annot_denoise.inference.postprocess.frame import Frame, StepConfig

Stage = Literal["detection", "inpainting", "composition"]
STAGES: tuple[Stage, ...] = ("detection", "inpainting", "composition")
StepFn = Callable[[Frame, Any], Frame]


@dataclass(frozen=True)
class Step:
    """A named step: its function for each stage it acts in, and its config."""

    hooks: dict[Stage, StepFn]
    config: type[StepConfig]


# In the order they run: each may rely on what the steps before it did. Empty since
# the ablation of 2026-12-07: on the validation set no step earned its place
# (docs/postprocess.md); a new one joins here once it does.
STEPS: dict[str, Step] = {}
# Steps the ablation deleted (bench/ablate.py; why, in docs/postprocess.md). A
# checkpoint saved before lists them: it loads without them, with a warning.
REMOVED: dict[str, str] = {
    name: "deleted on 2026-12-07 by the ablation on the validation set (docs/postprocess.md)"
    for name in (
        "scan_edges",
        "colour_completion",
        "flat_completion",
        "close_islands",
        "translucent_boxes",
        "telea_blend",
        "flat_background",
        "surround_telea",
        "grey_scan",
        "surround_edge",
    )
}
DEFAULT_STEPS: tuple[str, ...] = tuple(STEPS)


class PostprocessConfig(BaseModel):
    """The steps to run (a subsequence of ``DEFAULT_STEPS``, in that order) and each
    step's constants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: tuple[str, ...] = Field(DEFAULT_STEPS, description="the steps that run, in order")
    # Each step's constants: a field named after the step, typed by its config.

    @field_validator("steps")
    @classmethod
    def _known_and_in_order(cls, steps: tuple[str, ...]) -> tuple[str, ...]:
        removed = [s for s in steps if s in REMOVED]
        if removed:
            raise ValueError(f"step(s) {removed} {REMOVED[removed[0]]}; choose from {list(STEPS)}")
        unknown = [s for s in steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; choose from {list(STEPS)}")
        if len(set(steps)) != len(steps):
            raise ValueError(f"a step is listed twice in {list(steps)}")
        if list(steps) != [s for s in STEPS if s in steps]:
            raise ValueError(
                f"steps must keep the order {list(STEPS)} (each relies on the ones before it)"
            )
        return steps

    def params(self, name: str) -> StepConfig:
        """Step ``name``'s constants."""
        return getattr(self, name)


def without_removed(value: dict) -> tuple[dict, list[str]]:
    """A stored step config (a checkpoint's) without the steps deleted since it was
    saved, and their names: models saved before a deletion keep loading."""
    gone = [s for s in value.get("steps") or () if s in REMOVED]
    value = {k: v for k, v in value.items() if k not in REMOVED}
    if "steps" in value:
        value["steps"] = [s for s in value["steps"] if s not in REMOVED]
    return value, gone


def run_stage(stage: Stage, frame: Frame, cfg: PostprocessConfig) -> Frame:
    """Run the configured steps that act in ``stage``, in order."""
    for name in cfg.steps:
        hook = STEPS[name].hooks.get(stage)
        if hook is not None:
            frame = hook(frame, cfg.params(name))
    return frame


def with_steps(base: PostprocessConfig, spec: str | None) -> PostprocessConfig:
    """``base`` (a model's own config) with the steps ``--postprocess`` names:
    'default' or None (``base``'s own), 'none', or names separated by commas."""
    spec = "default" if spec is None else spec.strip()
    if spec == "default":
        return base
    steps = () if spec == "none" else tuple(n.strip() for n in spec.split(",") if n.strip())
    return PostprocessConfig.model_validate({**base.model_dump(), "steps": steps})


def reference_markdown() -> str:
    """The step reference (docs/postprocess.md is generated from it): each step in
    order, the stages it acts in, what it does, and its constants."""
    import inspect

    where = {
        "detection": "two-stage models at native resolution, after the detector",
        "inpainting": "two-stage models at native resolution and given masks, on each crop",
        "composition": "every mask-aware model, on the whole image",
    }
    lines = []
    for name, step in STEPS.items():
        lines += [f"### `{name}`", ""]
        for stage, hook in step.hooks.items():
            paragraphs = [" ".join(p.split()) for p in inspect.getdoc(hook).split("\n\n")]
            lines += [f"- **{stage}** ({where[stage]}): {paragraphs[0]}"]
            lines += [f"\n  {p}" for p in paragraphs[1:]]
        fields = step.config.model_fields
        if fields:
            lines += ["", "| constant | default | meaning |", "|---|---|---|"]
            for key, info in fields.items():
                default = info.default
                shown = f"{default:.4g}" if isinstance(default, float) else str(default)
                lines += [f"| `{name}.{key}` | `{shown}` | {info.description} |"]
        lines += [""]
    return "\n".join(lines) if lines else "No step is registered.\n"


__all__ = [
    "DEFAULT_STEPS",
    "REMOVED",
    "STAGES",
    "STEPS",
    "Frame",
    "PostprocessConfig",
    "Step",
    "reference_markdown",
    "run_stage",
    "with_steps",
    "without_removed",
]
