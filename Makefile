# lcdata front door. `make demo` and `make test` each create .venv if missing and install everything.
# torch==2.13.0 is installed first: it is the locally available CPU wheel, inside the package's range.
#
# The data chain uses file targets, so a re-run redoes only what changed:
#   $(OUT)/stats/stats.json -> $(OUT)/plan/plan.json -> $(OUT)/shards/manifest.json

PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.lcdata-installed
OUT       ?= out/demo
CORPUS    ?= data/demo
TOKENIZER ?= data/demo/tokenizer.json
STRATEGY  ?= per-source
BUDGET    ?= 2M
SEQ_LEN   ?= 16384
PACKING   ?= concat
SEED      ?= 0
WORKERS   ?=
LCDATA    := $(BIN)/lcdata
WFLAG     := $(if $(WORKERS),--workers $(WORKERS))
CORPUS_FILES := $(shell find $(CORPUS) -name '*.jsonl*' -o -name '*.parquet' 2>/dev/null)

.PHONY: venv test demo stats sample shards lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[train,fast,dev]"
	$(BIN)/python -m pip install -q --no-deps megatron-core
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check lcdata lcdata_train tests benchmarks scripts

# The main job on the embedded demo corpus: statistics, a per-source sample, packed shards, verified.
demo: venv shards
	$(LCDATA) verify $(OUT)/shards
	$(LCDATA) inspect $(OUT)/shards --seq 0 --max-chars 160

stats: $(OUT)/stats/stats.json
sample: $(OUT)/plan/plan.json
shards: $(OUT)/shards/manifest.json

$(OUT)/stats/stats.json: $(STAMP) $(CORPUS_FILES) $(TOKENIZER)
	$(LCDATA) stats $(CORPUS) --tokenizer $(TOKENIZER) --calibrate --out $(OUT)/stats $(WFLAG)

$(OUT)/plan/plan.json: $(OUT)/stats/stats.json
	$(LCDATA) sample $(CORPUS) --stats $(OUT)/stats --strategy $(STRATEGY) --budget-tokens $(BUDGET) \
		--seed $(SEED) --out $(OUT)/plan $(WFLAG)

$(OUT)/shards/manifest.json: $(OUT)/plan/plan.json
	$(LCDATA) build $(CORPUS) --plan $(OUT)/plan --tokenizer $(TOKENIZER) --seq-len $(SEQ_LEN) \
		--packing $(PACKING) --seed $(SEED) --out $(OUT)/shards --overwrite $(WFLAG)

bench: venv
	$(BIN)/python benchmarks/bench_stats.py
	$(BIN)/python benchmarks/bench_sample.py
	$(BIN)/python benchmarks/bench_build.py

clean:
	rm -rf out .pytest_cache
