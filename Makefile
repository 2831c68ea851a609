# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
WEB_VENDOR := signaling/static/vendor
WEB_STAMP := $(WEB_VENDOR)/node_modules/.installed-$(shell cksum $(WEB_VENDOR)/package-lock.json | cut -d' ' -f1)

# The browser receiver's networks (receive.html): the shipped models as ONNX, best picture first; the page times each
# and renders with the best one this browser runs in time. Rebuilt when a weights file changes.
WEB_MODEL_WEIGHTS := $(wildcard $(addprefix codec/weights/,cpu.safetensors web.safetensors web-small.safetensors))
WEB_MODELS := signaling/static/models/index.json

.PHONY: demo test test-all install system-deps web-deps web-models clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v < (3, 13) else "kpcall needs Python 3.11 or 3.12 (numpy 1.26.4 and mediapipe 0.10.21 have no wheels for %d.%d): run make PYTHON=python3.11 or python3.12" % v)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser tests (Playwright's own browser download does not work here), redis-server for
# the multi-instance signaling tests and coturn's turnserver for the TURN test. Tests start their own private
# redis-server/turnserver on free ports in temp dirs (never the system services) and skip with the reason without them.
SYSTEM_DEPS := chromium:chromium redis-server:redis-server turnserver:coturn
system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do command -v $${dep%%:*} >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing; the tests that need them will be skipped (sudo apt-get install$$missing)"; fi; \
	fi

# onnxruntime-web for the page's neural renderer (issue 24), pinned in $(WEB_VENDOR)/package-lock.json and served
# by the signaling server from there: nothing comes from a CDN. Without npm its browser test is skipped.
web-deps:
	@if [ -f $(WEB_STAMP) ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(WEB_VENDOR) --no-audit --no-fund --ignore-scripts --loglevel=error && touch $(WEB_STAMP); \
	else echo "npm missing: the browser renderer's test will be skipped (apt-get install npm)"; fi

demo: $(STAMP) web-models
	$(PY) -m participant demo $(DEMO)

web-models: $(WEB_MODELS)

$(WEB_MODELS): $(STAMP) $(WEB_MODEL_WEIGHTS)
	$(PY) -m codec.export $(addprefix --weights ,$(WEB_MODEL_WEIGHTS)) --out signaling/static/models

test: $(STAMP) system-deps web-deps
	$(PY) -m pytest -q

test-all: $(STAMP) system-deps web-deps
	$(PY) -m pytest -q -m ''

clean:
	rm -rf $(VENV) build *.egg-info
