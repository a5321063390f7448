# Two entry points on a fresh machine: `make demo` and `make test`. Both build .venv from
# the pyproject files first (the five layers editable, the root's dependency groups);
# nothing depends on anything installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench soak clean

LAYERS := static_contracts sdk backends lambda_worker infra
EDITABLE := -e ./static_contracts -e ./sdk -e './backends[all]' -e './lambda_worker[dev]' \
	-e './infra[cdk]' -e '.[all]'

$(STAMP): pyproject.toml $(foreach layer,$(LAYERS),$(layer)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'  # 25.1: PEP 735 --group
	$(BIN)/python -m pip install --quiet $(EDITABLE) --group dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python docs/examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/pyright

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet $(EDITABLE) --group dev --group bench
	$(BIN)/python -m bench

# 10,000 jobs with injected faults over the local stack in each of three configurations (an
# explicit dlq_url, none, FIFO), then the exact account (a smaller run is in `make test`).
soak: $(STAMP)
	$(BIN)/python tests/soak.py --jobs 10000

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
