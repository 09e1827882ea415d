# One-command set-up and use. `make demo` and `make test` create .venv, install what they need, and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on this project's machines; pass TORCH="torch" (or a CUDA wheel spec) to get a GPU build elsewhere.
TORCH ?= torch==2.13.0
DEMO_OUT ?= ldct-demo

.PHONY: install install-test demo test clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test,training,bm3d]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/ldct-denoise demo --out $(DEMO_OUT)

test: $(VENV)/.installed-test
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -ra

clean-venv:
	rm -rf $(VENV)
