# Two commands on a fresh machine:  make run   (the system)   and   make test   (the tests).
VENV ?= .venv
PORT ?= 8080
HOST ?= 127.0.0.1
IMAGES ?=
DATA ?=

.PHONY: run test setup setup-dev services lint typecheck bench clean \
  images stack-up stack-down test-containers

run: setup
	$(VENV)/bin/elastichash serve --host $(HOST) --port $(PORT) \
	  $(if $(IMAGES),--images $(IMAGES)) $(if $(DATA),--data $(DATA))

test: setup-dev services
	$(VENV)/bin/python -m pytest -q tests

# Containers (docs/DEPLOY.md): Docker when an engine answers, else podman (installed from Debian
# when missing) on a local Debian base: no registry needed.
images:
	@scripts/containers.sh images

stack-up: setup images
	@scripts/containers.sh up

stack-down:
	@scripts/containers.sh down

# The stack in containers, end to end (scripts/test-containers.sh): installs what it needs,
# builds the images, runs both container tests, and always takes down what they started.
test-containers: setup-dev
	@scripts/test-containers.sh

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
