# presence-bridge: the two commands a newcomer needs are `make demo` and
# `make test`. Every target installs what it needs and is idempotent.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA := $(PYTHON) deploy/local/kafka/localkafka.py
KAFKA_PORT ?= 9092
export KAFKA_PORT
# The install stamp depends on pyproject.toml: a changed dependency list
# reinstalls, an unchanged one installs nothing.
INSTALLED := $(VENV)/.installed
# Shopify's Toxiproxy, for `make chaos` and its tests (built below).
TOXIPROXY_VERSION := v2.5.0
TOXIPROXY := .cache/bin/toxiproxy-server

.PHONY: help venv kafka-jars kafka-up kafka-down kafka-status lint typecheck test pytest demo bench clean
.PHONY: deploy-tools helm-docs lock dashboard-png chaos

help:
	@echo "make test        lint, type-check and run every test (starts its own Kafka)"
	@echo "make demo        local Kafka + Genesys simulator + bridge fleet (DEMO_ARGS=\"--seconds 60\")"
	@echo "make kafka-up    start the local Kafka broker on 127.0.0.1:\$$KAFKA_PORT (default 9092)"
	@echo "make kafka-down  stop it"
	@echo "make dashboard-png  redraw deploy/grafana/dashboard.png from a live Prometheus (about 2 minutes)"
	@echo "make chaos       composed-fault run: simulator + own Kafka + workers (CHAOS_ARGS=\"--seed 7 --minutes 3\")"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(INSTALLED)

kafka-jars:
	@$(KAFKA) fetch

kafka-up: kafka-jars
	@$(KAFKA) up

kafka-down:
	@$(KAFKA) down

kafka-status:
	@$(KAFKA) status

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy --strict bridge

# pytest exits 5 when it collected no test; like any non-zero code that
# fails the target, so an empty run never passes.
pytest: $(INSTALLED) kafka-jars deploy-tools $(TOXIPROXY)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Deploy tooling for tests/deploy: a pinned helm built once from the Go
# module proxy into .cache/bin (about 2 minutes, git-ignored), and promtool
# from Debian's prometheus package. Both are skipped when already present.
HELM_VERSION := v3.22.0
HELM := .cache/bin/helm
PROMTOOL := /usr/bin/promtool

$(HELM):
	@mkdir -p $(dir $@)
	@echo "building helm $(HELM_VERSION) into $(dir $@) (once, about 2 minutes)"
	GOBIN=$(CURDIR)/.cache/bin go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(PROMTOOL):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus

deploy-tools: $(HELM) $(PROMTOOL)

# Shopify's Toxiproxy (TCP fault proxy) for `make chaos` and its tests: built once
# from the Go module proxy into .cache/bin (about 15 s); `go install` names it `server`.
$(TOXIPROXY):
	@mkdir -p $(dir $@)
	@echo "building toxiproxy $(TOXIPROXY_VERSION) into $(dir $@) (once, about 15 s)"
	GOBIN=$(CURDIR)/.cache/bin go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)
	mv $(CURDIR)/.cache/bin/server $@

# A seeded composed-fault run against its own Kafka broker (see `presence-bridge chaos --help`);
# exit 0 only when every invariant holds.
CHAOS_ARGS ?=
chaos: $(INSTALLED) kafka-jars $(TOXIPROXY)
	$(BIN)/python -m bridge chaos --toxiproxy $(TOXIPROXY) $(CHAOS_ARGS)

# Regenerate the README's Helm values table from helm/presence-bridge/values.yaml.
helm-docs: $(INSTALLED)
	$(BIN)/python -m tests.deploy.values_doc --write

# The image's hash-pinned lock files, from pyproject.toml's dependencies and
# build-system (pip-tools in its own venv under .cache; run with Python 3.11,
# the image's interpreter). A test keeps the lock in step with pyproject.
PIP_TOOLS_VERSION := 7.6.2
LOCK_VENV := .cache/lock-venv
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links
lock:
	@test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools==$(PIP_TOOLS_VERSION); }
	$(PIP_COMPILE) --output-file deploy/requirements.lock pyproject.toml
	$(PIP_COMPILE) --only-build-deps --build-deps-for wheel --output-file deploy/build-requirements.lock pyproject.toml

# A PNG of the dashboard's main panels, drawn from a real Prometheus scraping a
# demo fleet (about 2 minutes): tests/monitor/render_panels.py.
DASHBOARD_PNG_ARGS ?=
dashboard-png: $(INSTALLED) kafka-jars deploy-tools
	$(BIN)/python -m pip install --quiet -e '.[plot]'
	$(BIN)/python -m tests.monitor.render_panels $(DASHBOARD_PNG_ARGS)

# The demo runs until Ctrl-C; `make demo DEMO_ARGS="--seconds 60"` makes it finite
# (see `presence-bridge demo --help`). It ends with an audit: exit 0 only when it passes.
DEMO_ARGS ?=
demo: $(INSTALLED) kafka-up
	$(BIN)/python -m bridge demo --bootstrap 127.0.0.1:$(KAFKA_PORT) $(DEMO_ARGS)

# Benchmarks (not part of pytest): one table, every figure measured in the same run
# against a broker of its own (tests/bench/bench_bridge.py).
bench: $(INSTALLED) kafka-jars
	$(BIN)/python -m tests.bench.bench_bridge $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache/kafka-data .pytest_cache .mypy_cache .ruff_cache
