# Two commands matter: `make demo` (the quick start) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck format demo bench clean

install: $(STAMP)

# Re-installs only when the project's metadata changes; otherwise a no-op.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,onnx]'
	@touch $(STAMP)

# The cheap static checks run first (lint: seconds, typecheck: tens of seconds), so a style or type error fails
# before the minutes of pytest. CI (.ci/run) runs exactly this target.
test: lint typecheck
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Strictness and the package checked are set in pyproject.toml [tool.mypy].
typecheck: install
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/quickstart.sh

bench: install
	$(PY) benchmarks/models.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/evaluate.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
