# Two commands do everything on a fresh machine (Python 3.11+, Debian/Ubuntu, no GPU needed):
#   make serve   build the site (executing every example) and serve it on 127.0.0.1:8000
#   make test    kernel tests (CPU interpreter), strict site build, browser tests
PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
JOBS     ?= 2
CHROMIUM ?= /usr/bin/chromium
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup chromium test test-kernels build test-site serve clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	touch $(STAMP)

setup: $(STAMP)

# Browser tests drive Debian's chromium; playwright never downloads a browser of its own.
chromium:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test-kernels: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) tests --ignore=tests/site

build: $(STAMP)
	$(BIN)/mkdocs build --strict

test-site: $(STAMP) chromium build
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest tests/site

test: test-kernels test-site

serve: $(STAMP)
	$(BIN)/mkdocs serve --strict -a 127.0.0.1:8000

clean:
	rm -rf $(VENV) site .cache test-artifacts
