# The project's entry points. `make up` and `make test` work on a fresh Debian 12 machine as
# root: stack/bootstrap.sh installs what is missing first (silent when nothing is).
PYTHON := .venv/bin/python
MODE ?= preview
PYTEST_ARGS ?=

.PHONY: bootstrap up down status compose-up compose-down test lint bench

bootstrap:
	@bash stack/bootstrap.sh

## up: start PostgreSQL, Memcached, two instances, Nginx on :9999 and the processor emulators
up: bootstrap
	@$(PYTHON) -m stack up

## down: stop everything `make up` started
down:
	@$(PYTHON) -m stack down

## status: what runs, and the CPU and memory it used under its limits
status:
	@$(PYTHON) -m stack status || true

## compose-up: docker-compose.yml for real: engine, images, processor emulators, compose up
compose-up: bootstrap
	@$(PYTHON) -m stack compose up

## compose-down: take the compose deployment down (the engine keeps running)
compose-down:
	@$(PYTHON) -m stack compose down

## test: every test, unit to integration (the integration tests start their own services)
test: bootstrap
	$(PYTHON) -m pytest $(PYTEST_ARGS)

## lint: ruff's checks and formatting
lint: bootstrap
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

## bench: the contest's load test on a stack of its own, scored (MODE=preview or final)
bench: bootstrap
	$(PYTHON) -m bench $(MODE)
