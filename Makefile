# The README's two commands: `make demo` and `make test`. Each works alone on a
# fresh machine: it creates .venv, installs the package, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format install clean-venv docs-cli docs-config docs-postprocess default-model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/annot-denoise demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)

# Regenerate the config table in docs/config.md from the pydantic models.
# docs/cli.md: the command reference, from the Typer app itself.
docs-cli: $(VENV)/.installed
	$(BIN)/python -c "import pathlib; from annot_denoise.cli import reference_markdown as r; \
	p = pathlib.Path('docs/cli.md'); t = p.read_text(); mark = '<!-- generated'; \
	head = t[: t.index(mark)]; p.write_text(head + t[t.index(mark):].split('\n', 1)[0] + '\n' + r())"

docs-config: $(VENV)/.installed
	$(BIN)/python -c "import re, pathlib; from annot_denoise.config import reference_markdown as r; \
	p = pathlib.Path('docs/config.md'); t = p.read_text(); \
	p.write_text(re.sub(r'(<!-- generated.*?-->\n).*?(\n## Notes)', lambda m: m.group(1) + r() + m.group(2), t, flags=re.S))"

# Regenerate the step reference in docs/postprocess.md from the step registry.
docs-postprocess: $(VENV)/.installed
	$(BIN)/python -c "import pathlib; from annot_denoise.inference.postprocess import reference_markdown as r; \
	p = pathlib.Path('docs/postprocess.md'); t = p.read_text(); mark = '<!-- generated'; \
	head = t[: t.index(mark)]; p.write_text(head + t[t.index(mark):].split('\n', 1)[0] + '\n' + r())"

# Reproduce the shipped default model (see docs/default-model.md): a GPU run, then
# nine fine-tunes on 2 CPU cores (phantoms twice, real backgrounds four times, then
# the inpainter alone twice, then the detector alone); the threshold is the one
# chosen on data/validation (bench/validation_set.py).
default-model: $(VENV)/.installed
	$(BIN)/annot-denoise phantoms data/default-phantoms --count 600 --varied --seed 0 --workers 8
	$(BIN)/annot-denoise train examples/default-model.yaml
	$(BIN)/annot-denoise train examples/default-model-finetune.yaml
	$(BIN)/annot-denoise train examples/default-model-finetune2.yaml
	$(BIN)/python examples/real_backgrounds.py --out data/default-real
	$(BIN)/annot-denoise train examples/default-model-real.yaml
	$(BIN)/annot-denoise train examples/default-model-real-long.yaml
	$(BIN)/annot-denoise train examples/default-model-real-ui.yaml
	$(BIN)/annot-denoise train examples/default-model-real-focus.yaml
	$(BIN)/annot-denoise train examples/default-model-real-inpaint.yaml
	$(BIN)/annot-denoise train examples/default-model-real-holes.yaml
	$(BIN)/annot-denoise train examples/default-model-real-detector.yaml
	$(BIN)/annot-denoise export runs/default-model-real-detector/last.pt annot_denoise/weights/default.pt \
		--mask-threshold 0.5
