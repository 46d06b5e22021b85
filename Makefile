# Firstlight — `make` lists the targets.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup system-deps browser protos run demo demo-ladder test test-unit test-integration test-slow check bench load soak k8s-validate clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) ## Create .venv with the pinned dependencies (idempotent)

system-deps: ## Install the Debian packages the tests need when missing (PostgreSQL server; root)
	bash scripts/system-deps.sh

# The Portal's browser tests drive Debian's chromium through chromium-driver (Selenium). No
# browser is ever downloaded by a test: this installs the distribution's packages (as root, as CI
# runs) when they are missing, and the tests fail (never skip) without them.
BROWSER_PKGS := chromium chromium-driver fonts-dejavu-core
browser: ## Install Debian's chromium + chromium-driver for the browser tests (apt-get, as root) unless present
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BROWSER_PKGS); fi

protos: $(STAMP) ## Regenerate Python code from protos/ (committed; a test checks it is fresh)
	$(PY) -m firstlight.protogen

run: setup ## Start the whole local stack (broker, Triton, services), run the demo, serve until Ctrl-C
	$(VENV)/bin/firstlight up --demo

demo: setup ## Run the demo against an already running stack
	$(VENV)/bin/firstlight demo

demo-ladder: setup ## The data-efficiency ladder on 700 bundled images: starts its own stack, writes ladder-report/
	$(PY) -m firstlight.ladder_demo

# PYTEST_ARGS adds pytest options, e.g. PYTEST_ARGS="--durations=25" (CI) or "-x -k upload".
PYTEST_ARGS ?=
test: setup system-deps browser ## Run the whole test suite (unit + integration + e2e + browser), without the `slow` seed sweeps and soaks
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-unit: setup ## Fast, pure tests only
	$(PY) -m pytest -q -m "not slow" tests/unit $(PYTEST_ARGS)

test-integration: setup system-deps browser ## Tests that start real servers
	$(PY) -m pytest -q -m "not slow" tests/integration tests/e2e $(PYTEST_ARGS)

test-slow: setup system-deps ## Seed sweeps, long loops and soaks (the `slow` marker; not run by CI)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# `make check`: every check runs (a failure does not hide the next ones); it fails if any failed.
# mypy checks the pure layers (each service's core.py, the shared domain package once it
# exists, clients/, errors.py) and the SDK and CLI (typed clean, kept so). The contracts are in
# pyproject.toml ([tool.importlinter]).
LINT_PATHS := services tests bench scripts
MYPY_SCOPE = $(wildcard services/firstlight/*/core.py) $(wildcard services/firstlight/domain) services/firstlight/clients \
	services/firstlight/errors.py services/firstlight/sdk services/firstlight/cli
check: setup ## Lint (ruff), format check (ruff format), types of the pure layers (mypy), import contracts (lint-imports)
	@rc=0; \
	echo "== ruff check"; $(VENV)/bin/ruff check $(LINT_PATHS) || rc=1; \
	echo "== ruff format --check"; $(VENV)/bin/ruff format --check --output-format concise $(LINT_PATHS) || rc=1; \
	echo "== mypy"; $(VENV)/bin/mypy $(MYPY_SCOPE) || rc=1; \
	echo "== lint-imports"; PYTHONPATH=services $(VENV)/bin/lint-imports --no-cache || rc=1; \
	exit $$rc

LOAD_ARGS ?=
load: setup ## Load test on loopback: 8 clients upload/search/predict for 2 min; bench/results/load.{json,md} (LOAD_ARGS="--clients 16 --seconds 300")
	$(PY) -m bench.load $(LOAD_ARGS)

SOAK_SECONDS ?= 1800
SOAK_ARGS ?= --kill broker@$$(($(SOAK_SECONDS) / 3)) --kill triton@$$(($(SOAK_SECONDS) * 2 / 3))
soak: setup ## Soak: `make load` for 30 min under the supervisor, broker SIGKILLed at 1/3, Triton at 2/3; clients retry; every input reconciled; bench/results/soak.{json,md} (SOAK_SECONDS=180 to try it)
	$(PY) -m bench.load --seconds $(SOAK_SECONDS) --retry $(SOAK_ARGS) --out bench/results/soak $(LOAD_ARGS)

k8s-validate: setup ## Render every kustomize overlay and check it against the Kubernetes schemas and the code
	$(PY) -m pytest -q tests/unit/test_k8s_manifests.py

bench: setup ## Benchmarks (ratios against baselines measured in the same run)
	$(PY) -m bench

clean: ## Remove local state and caches (keeps .venv)
	rm -rf .firstlight .pytest_cache bench/results
	find . -name __pycache__ -prune -exec rm -rf {} +
