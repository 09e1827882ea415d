# One-command set-up and use. `make demo` and `make test` create .venv, install what they need, and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on this project's machines; pass TORCH="torch" (or a CUDA wheel spec) to get a GPU build elsewhere.
TORCH ?= torch==2.13.0
DEMO_OUT ?= ldct-demo
# A second environment that holds only what a fresh Slicer 5.10 bundles (Slicer/Slicer v5.10.0
# SuperBuild/External_python-*.cmake: these versions), plus the stand-ins for Slicer's own Qt and MRML (PySide6,
# slicer-core and its VTK, installed without VTK's matplotlib, which Slicer's VTK does not need) and pytest.
SLICER_VENV ?= .venv-slicer
SLICER_BUNDLED ?= numpy==2.0.2 scipy==1.13.1 pydicom==2.4.4 packaging==25.0 pillow==11.2.1
SLICER_STAND_INS ?= PySide6-Essentials pytest
SLICER_MRML ?= slicer-core==5.13.31053.0 vtk==9.6.2

.PHONY: install install-test demo test test-engine test-fresh-slicer clean-venv

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

$(SLICER_VENV)/.installed: Makefile
	rm -rf $(SLICER_VENV)
	$(PYTHON) -m venv $(SLICER_VENV)
	$(SLICER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SLICER_VENV)/bin/python -m pip install --quiet $(SLICER_BUNDLED) $(SLICER_STAND_INS)
	$(SLICER_VENV)/bin/python -m pip install --quiet --no-deps $(SLICER_MRML)
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/ldct-denoise demo --out $(DEMO_OUT)

test: test-fresh-slicer test-engine

test-engine: $(VENV)/.installed-test
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -ra

test-fresh-slicer: $(SLICER_VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(SLICER_VENV)/bin/python -m pytest -ra Testing/FreshSlicer

clean-venv:
	rm -rf $(VENV) $(SLICER_VENV)
