# Two commands do everything on a fresh machine (Python 3.11+, Debian/Ubuntu, no GPU needed):
#   make serve   build the site (executing every example) and serve it on 127.0.0.1:8000
#   make test    strict site build, then every test: kernels (CPU interpreter), site, browser
# On a machine without a GPU, `make TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs
# the CPU build of PyTorch instead of the default index's CUDA build (several GB).
PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
JOBS        ?= 2
CHROMIUM    ?= /usr/bin/chromium
TORCH_INDEX ?=
PIP         := $(BIN)/pip install --disable-pip-version-check --progress-bar on
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup chromium test test-kernels build test-site serve plotly-bundle clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	@echo "Installing torch==2.13.0 from $(if $(TORCH_INDEX),$(TORCH_INDEX),the default index (CUDA build, several GB; TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build))"
	$(PIP) "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) -r requirements-dev.txt -e .
	touch $(STAMP)

setup: $(STAMP)

# Browser tests drive Debian's chromium; playwright never downloads a browser of its own.
# Installing it takes root (apt-get); without it the browser tests are skipped, saying why.
chromium:
	@if test -x $(CHROMIUM); then :; \
	elif test "$$(id -u)" = 0; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "No Chromium at $(CHROMIUM), and installing it needs root: run 'sudo make chromium'" \
		     "(or CHROMIUM=/path/to/chromium). The browser tests will be skipped."; \
	fi

# One pytest run over tests/: markers, not paths, split it (pytest.ini). The browser tests
# (marker `browser`, tests/site) need the built site and share one xdist worker and one browser.
test-kernels: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -m "not browser" tests

build: $(STAMP)
	$(BIN)/mkdocs build --strict

test-site: $(STAMP) chromium build
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -m browser tests

test: $(STAMP) chromium build
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -n $(JOBS) --dist loadgroup tests

serve: $(STAMP)
	$(BIN)/mkdocs serve --strict -a 127.0.0.1:8000

# The site ships its own partial Plotly bundle (scripts/plotly_bundle.js: scatter, bar, heatmap),
# built with esbuild from plotly.js at the version the Python package draws for. Rerun after
# upgrading plotly; needs npm and the npm registry. A figure with another trace type would not
# draw: tests/site/test_phone.py checks every figure's trace types against the bundle's.
PLOTLY_DIR := docs/javascripts/plotly
ESBUILD_FLAGS := --bundle --minify --format=iife --global-name=Plotly --target=es2016 --legal-comments=none \
	--define:global=window --define:define.amd=false --loader:.css=empty
plotly-bundle: $(STAMP)
	@version=$$($(BIN)/python -c "import plotly.offline; print(plotly.offline.get_plotlyjs_version())"); \
	tmp=$$(mktemp -d); \
	cp scripts/plotly_bundle.js $$tmp/entry.js && \
	(cd $$tmp && npm init -y >/dev/null && npm install --silent --no-audit --no-fund plotly.js@$$version esbuild >/dev/null && \
	 node_modules/.bin/esbuild entry.js $(ESBUILD_FLAGS) --outfile=plotly-site.min.js) && \
	cp $$tmp/plotly-site.min.js $(PLOTLY_DIR)/ && cp $$tmp/node_modules/plotly.js/LICENSE $(PLOTLY_DIR)/ && \
	rm -rf $$tmp && echo "$(PLOTLY_DIR)/plotly-site.min.js: plotly.js $$version (scatter, bar, heatmap)"

clean:
	rm -rf $(VENV) site .cache test-artifacts
