# The two commands of the README: `make up` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
export DOCKER_HOST ?= unix:///run/cumulus-docker.sock
ARGS ?=

.PHONY: up test bootstrap lint unit bench

bootstrap:
	@./scripts/bootstrap.sh

## Start the platform (control plane + a local node) and deploy examples/hello.
up: bootstrap
	$(VENV)/bin/cumulus up $(ARGS)

## ruff, mypy, and the rooms' import contracts of pyproject.toml (import-linter).
lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

## The whole suite: lint, types, and every test tier (pytest exit 5, "no tests ran", fails).
test: lint
	$(VENV)/bin/python -m pytest $(ARGS)

bench: bootstrap
	$(VENV)/bin/python benchmarks/invoke_bench.py
	$(VENV)/bin/python benchmarks/metering_bench.py
	$(VENV)/bin/python benchmarks/placement_bench.py
	$(VENV)/bin/python benchmarks/events_bench.py
