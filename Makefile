# Parley: `make up` runs the whole platform on this machine, `make test` runs every test.
# Both install what is missing first; downloads and builds are cached under .state/.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

STATE      := $(CURDIR)/.state
VENV       := $(CURDIR)/.venv
BOOTSTRAP  := $(STATE)/bootstrap
UV_VERSION := 0.13.8
UV         := $(BOOTSTRAP)/bin/uv
BIN        := $(VENV)/bin
WEB        := $(CURDIR)/web
export UV_CACHE_DIR := $(STATE)/cache/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Generators (betterproto2) call ruff from PATH.
export PATH := $(BIN):$(PATH)

PYTEST_ARGS ?=

.PHONY: help venv web-deps up down status test test-unit test-integration lint format gen check-gen breaking ci clean

help:
	@echo "make up      install what is missing and run the whole platform"
	@echo "make down    stop everything 'make up' started"
	@echo "make test    install what is missing and run every test"
	@echo "make lint    ruff, mypy --strict, buf lint"
	@echo "make gen     regenerate gen/ from protos/"

$(UV):
	python3 -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The venv is in sync with the lock file whenever this stamp is newer than both.
$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --quiet
	touch $@

venv: $(VENV)/.synced

up: venv
	$(BIN)/parley up

down:
	@if [ -x $(BIN)/parley ]; then $(BIN)/parley down; else echo "nothing to stop"; fi

status: venv
	$(BIN)/parley status

# Servers are installed (downloaded, built) before the tests run, so no test's time limit
# includes a cold build; the tests then start the servers they need.
test: venv
	$(BIN)/parley install
	$(BIN)/parley install --only pulsar --pulsar apache
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/unit tests/contract $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/parley install
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

lint: venv web-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	cd $(WEB) && npx tsc --noEmit

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The web app's packages (and protoc-gen-es, which `make gen` runs), from its lock file.
$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --cache $(STATE)/cache/npm
	touch $@

web-deps: $(WEB)/node_modules/.installed

gen: venv web-deps
	$(BIN)/buf generate

# Regenerate and fail when the committed gen/ (and the web app's web/src/gen) differs from
# what the contracts produce.
check-gen: gen
	@git add --intent-to-add gen web/src/gen >/dev/null 2>&1 || true
	@if ! git diff --quiet -- gen web/src/gen; then \
	  echo "generated code is stale: run 'make gen' and commit the result"; \
	  git diff --stat -- gen web/src/gen; exit 1; \
	fi

# Wire and JSON compatibility against the previous commit (nothing to compare on the first).
breaking: venv
	@if git rev-parse --verify --quiet HEAD~1 >/dev/null && \
	    git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
	  $(BIN)/buf breaking --against '.git#ref=HEAD~1'; \
	else echo "buf breaking: no earlier commit with contracts to compare against"; fi

ci: lint check-gen breaking test

clean: down
	rm -rf $(STATE)/run
