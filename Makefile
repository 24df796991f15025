# vkafka: every command does its own set-up on a fresh machine.
PY      := .venv/bin/python
STACK   := $(PY) compose/devstack.py

.PHONY: setup up down status test demo bench reliability clean

## setup: virtualenv, Python dependencies, Kafka jars and the Kafka CLI in .venv/bin
setup: .venv/.installed
	@$(STACK) install-cli
	@command -v jq >/dev/null || { echo "installing jq (the demo's admin calls use it)"; \
	    apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
	@command -v chromium >/dev/null || { echo "installing chromium (the dashboard's browser test uses it)"; \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

.venv/.installed: setup.cfg setup.py pyproject.toml vkafka/protocol/_walk.c \
		vkafka/proxy/_send.c vkafka/proxy/_lane.c vkafka/_dispatch.c
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

## up: 3 Kafka brokers (29092-29094) and the demo's two gateways (6969, 7969)
up: setup
	$(STACK) up

## down: stop everything `up` started and remove its data
down:
	@if [ -x $(PY) ]; then $(STACK) down; else python3 compose/devstack.py down; fi

status:
	@if [ -x $(PY) ]; then $(STACK) status; else python3 compose/devstack.py status; fi

## test: the whole suite (unit + integration against real Kafka and real clients)
test: setup
	$(PY) -m pytest tests -ra

## demo: a fresh stack (down, up), then the demo scenario step by step
demo: setup
	$(STACK) down
	$(STACK) up
	PATH="$(CURDIR)/.venv/bin:$$PATH" bash compose/demo.sh

## bench: gateway vs direct Kafka in one run; writes docs/benchmarks.md and .png
bench: setup
	$(PY) bench/bench.py $(BENCH_ARGS)

## reliability: faults, load and hostile input against real gateways; writes docs/reliability.md
reliability: setup
	$(PY) reliability/run.py $(RELIABILITY_ARGS)

clean: down
	rm -rf .venv .stack
