# connector_batching — developer commands.  `make test` is what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: test lint typecheck docs pytest demo bench schema clean venv test-oldest-pycti

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check connector_batching example_connector tests benchmarks
	$(BIN)/ruff format --check connector_batching example_connector tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy connector_batching

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck docs pytest

demo: $(STAMP)
	$(BIN)/python -m example_connector --offline out --feed example_connector/data/sample_feed.csv

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# example connector: config schema (__metadata__), config.yml.sample and the docs table
schema: $(STAMP)
	$(BIN)/python -m example_connector.config_docs .

# the documentation site (docs/, mkdocs.yml) into site/; strict: a broken link fails
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache

# the integration tests against the oldest pycti pyproject.toml admits (what the OpenCTI
# connectors repository pins), in a second venv; CI (.ci/run) runs it after `make test`
OLDEST_PYCTI ?= 7.260817.0
VENV_OLDEST  ?= .venv-oldest
STAMP_OLDEST  = $(VENV_OLDEST)/.installed-$(OLDEST_PYCTI)

$(STAMP_OLDEST): pyproject.toml
	test -x $(VENV_OLDEST)/bin/python || $(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_OLDEST)/bin/python -m pip install --quiet -e '.[dev]' 'pycti==$(OLDEST_PYCTI)'
	touch $(STAMP_OLDEST)

test-oldest-pycti: $(STAMP_OLDEST)
	$(VENV_OLDEST)/bin/python -c 'import importlib.metadata as m, sys; v = m.version("pycti"); print("pycti", v); sys.exit(v != "$(OLDEST_PYCTI)")'
	CONNECTOR_BATCHING_REQUIRE_BROKER=1 $(VENV_OLDEST)/bin/python -m pytest tests/integration
