# The two commands a newcomer needs: `make demo` (the main job, offline) and `make test`
# (the full suite CI runs); `make test-fast` leaves out the end-to-end tests marked `integration`.
SHELL := /bin/bash
export NLTK_DATA ?= $(abspath ../shared/nltk_data)

.PHONY: setup test test-fast fuzz demo demo-second-set demo-third-set demo-other-prompts demo-ifbench lint bench gpu-check

setup:
	@bash scripts/setup.sh

# Two pytest workers (pytest-xdist), one thread each, whole files per worker (module fixtures are built
# once): most tests wait on a CLI subprocess, so a second worker roughly halves the suite on 2 cores.
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: setup
	.venv/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	.venv/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not integration"

demo: setup
	.venv/bin/sftlab run configs/cpu-demo.yaml

# After `make demo`: both demo models on more seeded IFEval prompts, then compared. Set B
# (demo-second-set) is the next 100 of the seeded order, disjoint from demo's; set C (demo-third-set) the
# 100 after those, disjoint from both: the check no setting was chosen on; demo-other-prompts the remaining
# 241 (draws 300-540), so that the four sets together are all 541 prompts.
demo-second-set: SET := second_set
demo-second-set: OFFSET := 100
demo-third-set: SET := third_set
demo-third-set: OFFSET := 200
demo-other-prompts: SET := other_prompts
demo-other-prompts: OFFSET := 300
demo-other-prompts: N := 241
demo-second-set demo-third-set demo-other-prompts: N ?= 100
demo-second-set demo-third-set demo-other-prompts: setup
	.venv/bin/sftlab eval --model smollm2-135m-instruct-gguf --output-dir runs/cpu-demo/$(SET)/baseline_eval \
		--ifeval-data ../shared/ifeval/input_data.jsonl --sample $(N) --seed 0 --sample-offset $(OFFSET) --max-new-tokens 512
	.venv/bin/sftlab eval --model runs/cpu-demo/train --output-dir runs/cpu-demo/$(SET)/finetuned_eval \
		--ifeval-data ../shared/ifeval/input_data.jsonl --sample $(N) --seed 0 --sample-offset $(OFFSET) --max-new-tokens 512
	.venv/bin/sftlab compare --baseline runs/cpu-demo/$(SET)/baseline_eval \
		--finetuned runs/cpu-demo/$(SET)/finetuned_eval --train-dir runs/cpu-demo/train \
		--json runs/cpu-demo/$(SET)/compare.json

# After `make demo`: both demo models on all 300 IFBench prompts (58 constraint types that are not IFEval's),
# then compared per category with paired standard errors. A separate target: it would double the demo's time.
demo-ifbench: setup
	.venv/bin/sftlab eval --benchmark ifbench --model smollm2-135m-instruct-gguf \
		--output-dir runs/cpu-demo/ifbench/baseline_eval --data ../shared/ifbench/IFBench_test.jsonl --max-new-tokens 512
	.venv/bin/sftlab eval --benchmark ifbench --model runs/cpu-demo/train \
		--output-dir runs/cpu-demo/ifbench/finetuned_eval --data ../shared/ifbench/IFBench_test.jsonl --max-new-tokens 512
	.venv/bin/sftlab compare --baseline runs/cpu-demo/ifbench/baseline_eval \
		--finetuned runs/cpu-demo/ifbench/finetuned_eval --json runs/cpu-demo/ifbench/compare.json

lint: setup
	.venv/bin/ruff check src tests

# The fuzz harness at full size (over 10,000 data records, 1,000 configs, 200 eval files; a few minutes):
# prints a table by category and the ids of unclean outcomes (rerun one: --case ID). `make test` runs a
# bounded form (tests/test_reliability.py). Seeded: FUZZ_SEED=N for another draw.
FUZZ_SEED ?= 0
fuzz: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python -m sftlab.bench.fuzz --size full --seed $(FUZZ_SEED)

bench: setup
	.venv/bin/sftlab bench --quick --json bench.json

# GPU readiness: the reference recipe for a few dozen bf16 steps on local data, a vLLM eval on 20 prompts
# (when vLLM is installed), DeepSpeed ZeRO-2 (when installed); prints what ran and what was skipped.
gpu-check: setup
	.venv/bin/python -m sftlab.bench.gpucheck $(GPU_CHECK_ARGS)
