# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint setup setup-test system-run system-test clean

# The portal's port: `make run PORT=8080` when 8000 is taken.
PORT ?= 8000
# pytest processes: each takes its own PostgreSQL database and Redis index (15 at most in all).
# Most tests wait on real processes, so two share two cores well.
TEST_WORKERS ?= 2

run: setup system-run
	$(BIN)/edc up --port $(PORT) --example examples/kvcache

test: setup-test system-test lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The tests also check the numpy reference against torch/transformers.
setup-test: $(BIN)/.installed-test

$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,torch]"
	touch $@

system-run:
	scripts/setup-system.sh run

system-test:
	scripts/setup-system.sh test

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
