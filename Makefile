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
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
KUSTOMIZE_VERSION := v5.8.1
KUSTOMIZE_BIN := .run/bin/kustomize-$(KUSTOMIZE_VERSION)

.PHONY: help install system-deps kustomize kafka-up kafka-down demo test test-unit test-integration lint check-deploy \
	k8s-rules rules bench fuzz clean

help:
	@echo "make demo   - local broker + worker + live traffic + refreshed adoption table (Ctrl-C stops)"
	@echo "make test   - the whole suite (unit, integration with a real broker, Prometheus/Alertmanager e2e)"
	@echo "other: install kafka-up kafka-down lint check-deploy k8s-rules rules bench fuzz clean"

# The product (editable, with its test extra) and the development tooling in dev/ (local broker, demo,
# generator, test helpers: the `adoptstream-dev` command). Quick when nothing changed: the stamp only
# goes stale when a pyproject.toml does.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml dev/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' -e ./dev
	@touch $@

# Prometheus, promtool, Alertmanager and amtool come from Debian; installed when missing and root.
system-deps:
	@bash deploy/install-system-deps.sh

# kustomize renders deploy/k8s/ in the tests: built once from its Go module into .run/bin (the module
# and build caches keep a rebuild after `make clean` short); .run/bin/kustomize points at this version.
kustomize: $(KUSTOMIZE_BIN)
	@ln -sfn $(notdir $(KUSTOMIZE_BIN)) .run/bin/kustomize

$(KUSTOMIZE_BIN):
	@mkdir -p .run/go-install $(@D)
	GOBIN=$(abspath .run/go-install) GOTOOLCHAIN=local $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mv .run/go-install/kustomize $@

kafka-up: install
	$(BIN)/adoptstream-dev kafka up --port $(KAFKA_PORT) --dir $(KAFKA_DIR)

kafka-down: install
	$(BIN)/adoptstream-dev kafka down --dir $(KAFKA_DIR)

demo: install kafka-up
	@$(BIN)/adoptstream-dev demo --broker kafka://127.0.0.1:$(KAFKA_PORT) --topic $(TOPIC) --web-port $(WEB_PORT) \
	  --kafka-dir $(KAFKA_DIR)

test: install system-deps kustomize
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-unit: install kustomize
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest -q tests/integration $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src dev tests bench grafana
	$(BIN)/lint-imports

check-deploy: install system-deps kustomize
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml
	amtool check-config deploy/alertmanager/alertmanager.yml
	.run/bin/kustomize build deploy/k8s/base >/dev/null
	.run/bin/kustomize build deploy/k8s/prometheus-operator >/dev/null

# The Prometheus Operator's PrometheusRule, from deploy/prometheus/rules/*.yml.
k8s-rules: install
	$(BIN)/python deploy/k8s/prometheusrule.py

# The faust contenders need the bench extra; installed once, again when pyproject.toml changes.
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py $(BENCH_ARGS)

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@touch $@

# 1,000,000 hostile messages through a local broker and a worker, every one accounted for (README figures)
FUZZ_MESSAGES ?= 1000000
fuzz: install
	$(BIN)/adoptstream-dev fuzz --messages $(FUZZ_MESSAGES)

clean:
	rm -rf .run build dist src/*.egg-info dev/*.egg-info .pytest_cache .hypothesis
