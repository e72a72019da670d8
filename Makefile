# Two commands on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment when it is missing. torch is installed
# first from TORCH_SPEC so that the loose `torch` requirement in pyproject does
# not pull a CUDA build; override it for a GPU machine, e.g.
#   make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" test
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.terraseg-installed

.PHONY: venv test test-all qgis-check lint format docs demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

# The outputs as GIS tools open them: GDAL's command-line tools and QGIS, headless.
# Opens the outputs with GDAL's command-line tools and headless QGIS (Debian's gdal-bin
# and python3-qgis, installed here when missing: needs root and Debian's package index).
qgis-check: $(STAMP)
	command -v ogrinfo >/dev/null && /usr/bin/python3 -c "import qgis.core" 2>/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends gdal-bin python3-qgis)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -rs tests/workflows/test_gis_tools.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# docs/configuration.md is generated from the configuration models; a test checks it.
docs: $(STAMP)
	$(BIN)/python -m terraseg.workflows.config_reference > docs/configuration.md

demo: $(STAMP)
	$(BIN)/terraseg demo --out demo

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
