# Two commands for a newcomer: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench serve lint clean package docs citations

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

test: lint  ## lint, then the whole suite (in parallel: one worker per core, at least two)
	$(BIN)/python -m pytest

# The tiers are markers (pyproject.toml, given in tests/conftest.py): the fast one starts no
# emulator, no real node, no Debian root.
test-fast: $(STAMP)  ## pure modules, adapters on moto, the route: about a minute
	$(BIN)/python -m pytest -m "not emulator and not realnodes and not infra"

lint: $(STAMP)  ## ruff (lint, format, import boundary, complexity), mypy (strict on what ships), docs current
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m slipway.docs --check

bench: $(STAMP)  ## figures, never pass/fail on time
	$(BIN)/python -m bench.run

citations: $(STAMP)  ## the IAM tests' file:line citations against the sources (SLIPWAY_PACKER_PLUGIN_AMAZON_SRC, SLIPWAY_SSM_AGENT_SRC)
	$(BIN)/python -m tests.deploy.test_bake_permissions

docs: $(STAMP)  ## regenerate what is derived: docs/ blocks (diagrams, states, settings), chalicelib/steps/index.py
	$(BIN)/python -m slipway.docs --write

# The CloudFormation the deploy path creates (docs/deploy-to-aws.md), linted and scanned.
# checkov gets a virtualenv of its own: its dependencies pin boto3/botocore below ours.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := .cache/checkov-$(CHECKOV_VERSION)
# Each skipped check is justified in docs/deploy-to-aws.md ("`make package`").
CHECKOV_SKIP    := CKV_AWS_18,CKV_AWS_73,CKV_AWS_76,CKV_AWS_115,CKV_AWS_116,CKV_AWS_117,CKV_AWS_120,CKV_AWS_158,CKV_AWS_173

$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)

package: $(STAMP) $(CHECKOV_VENV)/bin/checkov  ## dist/<stage>/: bootstrap template + chalice package, cfn-lint, checkov
	rm -rf dist
	$(BIN)/slipway package --out dist
	$(BIN)/cfn-lint dist/*/resources.json dist/*/chalice/sam.json
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation --skip-check $(CHECKOV_SKIP) \
	  $$(for f in dist/*/resources.json dist/*/chalice/sam.json; do printf -- '-f %s ' "$$f"; done)

clean:
	rm -rf $(VENV) .pytest_cache dist
