# The two commands of the quick start: `make demo` and `make test`. Both set themselves up.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: all setup demo test lint typecheck pytest bench clean

all: test

setup: $(STAMP)

$(STAMP): pyproject.toml tools/bootstrap.sh
	@bash tools/bootstrap.sh
	@touch $(STAMP)

# The environment-monitoring pipeline, four processes finding each other by mDNS inside a private
# network namespace that the demo creates and removes (it refuses when it cannot make one).
# `make demo DEMO_ARGS="--duration 5"` passes options on (see `agentmesh demo --help`).
demo: $(STAMP)
	@bash tools/ensure-iproute2.sh
	$(BIN)/agentmesh demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	@bash tools/ensure-iproute2.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks --full

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .hypothesis
