# The two commands a newcomer needs: `make demo` (the main job, offline) and `make test`
# (the full suite CI runs); `make test-fast` leaves out the end-to-end tests marked `integration`.
SHELL := /bin/bash
export NLTK_DATA ?= $(abspath ../shared/nltk_data)

.PHONY: setup test test-fast demo lint bench

setup:
	@bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not integration"

demo: setup
	.venv/bin/sftlab run configs/cpu-demo.yaml

lint: setup
	.venv/bin/ruff check src tests

bench: setup
	.venv/bin/sftlab bench --quick --json bench.json
