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

demo: $(STAMP)
	$(BIN)/python examples/hello.py

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
