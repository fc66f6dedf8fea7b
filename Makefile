# Two commands on a fresh machine:  make run   (the system)   and   make test   (the tests).
VENV ?= .venv
PORT ?= 8080
HOST ?= 127.0.0.1
IMAGES ?=
DATA ?=

.PHONY: run test setup setup-dev services lint typecheck bench clean

run: setup
	$(VENV)/bin/elastichash serve --host $(HOST) --port $(PORT) \
	  $(if $(IMAGES),--images $(IMAGES)) $(if $(DATA),--data $(DATA))

test: setup-dev services
	$(VENV)/bin/python -m pytest -q tests

setup:
	@scripts/setup.sh cpu,all

setup-dev:
	@scripts/setup.sh cpu,dev

services:
	@scripts/ensure-services.sh

lint: setup-dev
	$(VENV)/bin/ruff check elastichash gateway encoder_worker indexer_worker search_service bench tests

typecheck: setup-dev
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
