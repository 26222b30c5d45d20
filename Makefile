# Two commands matter: `make demo` (the quick start) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck format demo bench clean fashion-mnist

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
	$(PY) benchmarks/precision.py
	$(PY) benchmarks/study.py

# Fashion-MNIST's four IDX files, where `resnet sample-data DEST --dataset fashion-mnist` looks by default
# (/usr/share/datasets/fashion-mnist): Debian's package where apt-get exists; elsewhere, what to download.
fashion-mnist:
	@if dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
		echo "dataset-fashion-mnist is installed: resnet sample-data DEST --dataset fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get install -y dataset-fashion-mnist \
			|| { $$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; }; \
	else \
		echo "no apt-get here: download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz," \
			"t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from" \
			"https://github.com/zalandoresearch/fashion-mnist into a folder, then" \
			"resnet sample-data DEST --dataset fashion-mnist --source FOLDER"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
