# carehub: `make run` runs the hub on this machine; `make test` runs every test.
# Both set themselves up in .venv on first use (Python 3.11 and pip are all they need).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help setup run test test-unit test-integration lint proto proto-check bench clean

help:
	@echo "make run     - embedded broker + ingest + synthetic region (Ctrl-C stops everything)"
	@echo "make test    - unit and integration tests (starts its own broker)"
	@echo "make lint    - ruff, mypy, generated-code drift check"
	@echo "make bench   - ingest throughput vs faust baselines; linkage accuracy and latency"
	@echo "make proto   - regenerate carehub/v1 from protos/"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	CAREHUB_PROFILE=$${CAREHUB_PROFILE:-demo} $(BIN)/carehub run

test: $(STAMP)
	$(BIN)/pytest tests/unit -q
	$(BIN)/pytest tests/integration -q

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy carehub services tests bench tools
	PATH=$(BIN):$$PATH $(BIN)/python tools/gen_protos.py --check

proto: $(STAMP)
	PATH=$(BIN):$$PATH $(BIN)/python tools/gen_protos.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/ingest_bench.py
	$(BIN)/python bench/identity_accuracy.py

clean:
	rm -rf .carehub .pytest_cache .mypy_cache .ruff_cache build *.egg-info
