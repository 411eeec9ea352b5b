# The two commands a newcomer needs: `make demo` (the main job, offline) and `make test`
# (the full suite CI runs); `make test-fast` leaves out the end-to-end tests marked `integration`.
SHELL := /bin/bash
export NLTK_DATA ?= $(abspath ../shared/nltk_data)

.PHONY: setup test test-fast demo lint bench gpu-check

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

# GPU readiness: the reference recipe for a few dozen bf16 steps on local data, a vLLM eval on 20 prompts
# (when vLLM is installed), DeepSpeed ZeRO-2 (when installed); prints what ran and what was skipped.
gpu-check: setup
	.venv/bin/python -m sftlab.gpucheck $(GPU_CHECK_ARGS)
