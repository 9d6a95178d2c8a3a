# carehub: `make run` runs the hub on this machine; `make test` runs every test.
# Both set themselves up in .venv on first use (Python 3.11 and pip are all they need).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help setup run test test-unit test-integration test-loaded lint proto proto-check bench chaos fuzz clean prometheus chromium compose-up compose-down dashboard-png practice-page-png

# root installs system packages itself; anyone else through sudo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help:
	@echo "make run     - embedded broker + every service + synthetic region (Ctrl-C stops everything)"
	@echo "make test    - unit and integration tests (starts its own broker; installs Prometheus and Chromium if missing)"
	@echo "make test-loaded - make test 3 times in a row with a CPU-bound process on every core (RUNS=n)"
	@echo "make lint    - ruff, mypy, generated-code drift check"
	@echo "make bench   - throughput vs faust baselines; linkage accuracy and latency; alert latency to partners; MLLP and FHIR doors"
	@echo "make chaos   - kill every worker, stall the broker, drop partners at 1,000 events/s; print what was lost"
	@echo "make fuzz    - 100,000 malformed inputs per wire form; print crashes and every input's outcome"
	@echo "make proto   - regenerate carehub/v1 from protos/"
	@echo "make compose-up - Kafka + every service + synthetic feed + Prometheus/Grafana/Jaeger (docker compose)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

# The tests run the real Prometheus and promtool (Debian's package) on the shipped config and rules.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Prometheus and promtool (Debian package prometheus) for the tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends prometheus; }

# The practice dashboard page's test loads it in a real browser: Debian's chromium, headless.
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Chromium (Debian package chromium) for the dashboard page's browser test"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends chromium; }

# docker compose: Kafka (KRaft), every carehub service, the synthetic region, the OpenTelemetry
# Collector, Jaeger, Prometheus and Grafana. The first run writes a new pseudonymisation key to .env
# (mode 600, git-ignored); CAREHUB_PSEUDONYM_KEY in your environment takes precedence.
compose-up:
	@test -f .env || { umask 077; printf 'CAREHUB_PSEUDONYM_KEY=%s\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(32))')" > .env; \
	  echo "wrote .env with a new CAREHUB_PSEUDONYM_KEY: keep it, the hub's identity state depends on it"; }
	docker compose up --build -d
	@echo "Grafana    http://127.0.0.1:3000   (dashboards: carehub / Feeds, Pipeline, Partners)"
	@echo "Prometheus http://127.0.0.1:9090   Jaeger http://127.0.0.1:16686   Kafka localhost:9092"
	@echo "logs: docker compose logs -f ingest; stop: make compose-down"

compose-down:
	docker compose down

# Re-render docs/img/pipeline.png from a Prometheus that scraped a run (PROMETHEUS=http://127.0.0.1:9090).
dashboard-png: $(STAMP)
	$(BIN)/python tools/render_dashboard.py --prometheus $${PROMETHEUS:-http://127.0.0.1:9090} --last 15 --out docs/img/pipeline.png

# Re-render docs/img/dashboard.png from a running practice page (`make run` serves one at DASHBOARD).
practice-page-png: $(STAMP) chromium
	$(BIN)/python tools/practice_page_png.py --url $${DASHBOARD:-http://127.0.0.1:8080/} --out docs/img/dashboard.png

run: $(STAMP)
	CAREHUB_PROFILE=$${CAREHUB_PROFILE:-demo} $(BIN)/carehub run

test: $(STAMP) prometheus chromium
	$(BIN)/pytest tests/unit -q
	$(BIN)/pytest tests/integration -q

# The suite must hold on a busy machine: three full runs with every core kept busy.
test-loaded: $(STAMP) prometheus chromium
	PYTHON=$(PYTHON) tools/test_loaded.sh

test-unit: $(STAMP) prometheus chromium
	$(BIN)/pytest tests/unit -q

test-integration: $(STAMP) prometheus chromium
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
	$(BIN)/python bench/identity_scale.py
	$(BIN)/python bench/alerts_bench.py
	$(BIN)/python bench/doors_bench.py
	$(BIN)/python bench/overload_bench.py

# The fault suite (about 15 minutes) and the fuzzing campaign (100,000 malformed inputs per wire
# form): scripts that print their figures and exit non-zero when a must-be-zero figure is not.
chaos: $(STAMP)
	$(BIN)/python tools/chaos.py

fuzz: $(STAMP)
	$(BIN)/python tools/fuzz.py

clean:
	rm -rf .carehub .pytest_cache .mypy_cache .ruff_cache build *.egg-info
