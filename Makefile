# adoptstream: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KAFKA_PORT ?= 9092
KAFKA_DIR ?= .run/kafka
WEB_PORT ?= 6066
TOPIC ?= adoption-events
PYTEST_ARGS ?=

.PHONY: help install system-deps kafka-up kafka-down demo test test-unit test-integration lint check-deploy rules bench clean

help:
	@echo "make demo   - local broker + worker + live traffic + refreshed adoption table (Ctrl-C stops)"
	@echo "make test   - the whole suite (unit, integration with a real broker, Prometheus/Alertmanager e2e)"
	@echo "other: install kafka-up kafka-down lint check-deploy rules bench clean"

# Quick when nothing changed: the stamp only goes stale when pyproject.toml does.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

# Prometheus, promtool, Alertmanager and amtool come from Debian; installed when missing and root.
system-deps:
	@bash deploy/install-system-deps.sh

kafka-up: install
	$(BIN)/adoptstream kafka up --port $(KAFKA_PORT) --dir $(KAFKA_DIR)

kafka-down: install
	$(BIN)/adoptstream kafka down --dir $(KAFKA_DIR)

demo: install kafka-up
	@$(BIN)/adoptstream demo --broker kafka://127.0.0.1:$(KAFKA_PORT) --topic $(TOPIC) --web-port $(WEB_PORT) \
	  --kafka-dir $(KAFKA_DIR)

test: install system-deps
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest -q tests/integration $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench grafana

check-deploy: install system-deps
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml
	amtool check-config deploy/alertmanager/alertmanager.yml

# The faust contenders need the bench extra; installed once, again when pyproject.toml changes.
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py $(BENCH_ARGS)

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@touch $@

clean:
	rm -rf .run build dist src/*.egg-info .pytest_cache .hypothesis
