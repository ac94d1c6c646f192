# Two commands for a newcomer: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench serve lint clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml package.json package-lock.json
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Slipway needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error; \
	  else echo "npm not found: the ASL validator tests will skip (they fail on CI)"; fi
	@touch $@

demo: $(STAMP)  ## push -> bake -> network -> swarm -> prune -> teardown on the embedded emulator
	$(BIN)/slipway demo

serve: $(STAMP)  ## webhook on :8000, emulated AWS on :5000
	$(BIN)/slipway serve

test: $(STAMP)  ## the whole suite
	$(BIN)/python -m pytest

bench: $(STAMP)  ## figures, never pass/fail on time
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
