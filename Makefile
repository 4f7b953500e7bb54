# papermail: `make demo` to see it work, `make test` to prove it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test unit integration e2e lint typecheck format bench compose-check clean help

help:
	@echo "make demo      run the whole pipeline once, embedded, and say where to look"
	@echo "make test      install dev dependencies and run every test"
	@echo "make lint      ruff (check and format), pinned in pyproject's dev extra"
	@echo "make typecheck mypy over src/papermail and workers"
	@echo "make bench     delivery benchmark on real PostgreSQL, Redis, Celery, SMTP sink"
	@echo "make eval      offline relevance evaluation on ../shared/corpus (docs/relevance.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml tools/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]" -e ./tools
	@touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/papermail demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/unit tests/test_architecture.py $(PYTEST_ARGS)

integration: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

e2e: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src workers tests tools
	$(BIN)/ruff format --check src workers tests tools

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src workers tests tools
	$(BIN)/ruff check --fix src workers tests tools

BENCH_SUBSCRIBERS ?= 10000 100000
bench: $(VENV)/.installed-dev
	@for n in $(BENCH_SUBSCRIBERS); do $(BIN)/papermail bench --subscribers $$n || exit 1; done

# Offline relevance evaluation (docs/relevance.md): precision@10 per day for papermail,
# topic-match and trending-only. The corpus is read where it lives, never copied here.
.PHONY: eval
eval: $(VENV)/.installed-dev
	$(BIN)/python -m papermail_dev.evaluate ../shared/corpus/arxiv-2025-06-dev.jsonl

compose-check:
	docker-compose -f docker-compose.yml config -q && echo "docker-compose.yml is valid"

clean:
	rm -rf var test-artifacts .pytest_cache .ruff_cache
