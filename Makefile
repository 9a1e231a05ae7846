# lcdata front door. `make demo` and `make test` each create .venv if missing and install everything.
# torch==2.13.0 is installed first: it is the locally available CPU wheel, inside the package's range.
#
# The pipeline uses file targets with real dependencies, so a re-run redoes only what changed:
#   $(OUT)/stats/stats.json -> plan/plan.json -> shards/manifest.json -> run/final/config.json
#        -> needle/results.json + eval-loss/loss.json (on heldout/manifest.json) -> report.md
# `make shards`, `make train`, `make needle`, `make eval-loss`, `make report` stop at each stage.
# `make paper-ablation`: natural vs per-source vs one-domain-upsampled data, same base model, same budget.

PYTHON    ?= python3
VENV      ?= .venv
BIN       ?= $(VENV)/bin
STAMP     ?= $(VENV)/.lcdata-installed
OUT       ?= out/demo
CORPUS    ?= data/demo
TOKENIZER ?= data/demo/tokenizer.json
STRATEGY  ?= per-source
BUDGET    ?= 2M
SAMPLE_ARGS ?=
SEQ_LEN   ?= 16384
PACKING   ?= concat
SEED      ?= 0
WORKERS   ?=
# training (CPU-sized defaults: a debug model from scratch on 1K-token windows of the shards, a few minutes)
MODEL     ?= debug
TRAIN_SEQ_LEN ?= 1024
BATCH_TOKENS  ?= 4096
TRAIN_TOKENS  ?= 131072
LR        ?= 3e-3
TRAIN_ARGS ?=
# evaluation
NEEDLE_TASK    ?= needle
NEEDLE_MODE    ?= teacher-forced
NEEDLE_LENGTHS ?= 256:1024:4
NEEDLE_DEPTHS  ?= 0:100:5
NEEDLE_ARGS    ?=
POS_BUCKETS    ?= 0,512
EVAL_SEQUENCES ?= 64
LCDATA    := $(BIN)/lcdata

# A stage also re-runs when its variables change: $(call vars,FILE,TEXT) keeps TEXT in FILE and rewrites FILE
# (so its time changes) only when TEXT differs; each stage depends on its FILE. Written only for pipeline goals.
same = $(and $(findstring x$(1)x,x$(2)x),$(findstring x$(2)x,x$(1)x))
vars = $(shell mkdir -p $(dir $(1)))$(if $(call same,$(strip $(2)),$(strip $(file <$(1)))),,$(file >$(1),$(strip $(2))))
WFLAG     := $(if $(WORKERS),--workers $(WORKERS))
CORPUS_FILES := $(sort $(shell find $(CORPUS) -name '*.jsonl*' -o -name '*.parquet' 2>/dev/null))
# INPUTS feed stats/sample/build; HELDOUT (files or globs, quoted) feeds eval-loss and must not overlap them.
# The demo holds out one part file per source; for another CORPUS, INPUTS is all of it and HELDOUT is yours to name.
ifeq ($(CORPUS),data/demo)
INPUTS    ?= '$(CORPUS)/*/part-000.jsonl.zst' '$(CORPUS)/[!w]*/part-001.jsonl.zst'
HELDOUT   ?= '$(CORPUS)/*/part-002.jsonl.zst' '$(CORPUS)/web/part-001.jsonl.zst'
else
INPUTS    ?= $(CORPUS)
HELDOUT   ?=
endif

.SECONDARY:
.PHONY: venv test demo stats sample shards heldout train needle eval-loss report paper-ablation lint bench clean

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

# The main job on the embedded demo corpus: statistics, a per-source sample, packed shards (verified), a short
# continual-pretraining run, the needle evaluation and per-source/position loss, and out/demo/report.md.
demo: venv report
	$(LCDATA) verify $(OUT)/shards
	@echo "lcdata demo: open $(OUT)/report.md"

V := $(OUT)/.vars
ifneq ($(filter-out venv test lint bench clean paper-ablation $(ABL)/%,$(MAKECMDGOALS)),)
$(call vars,$(V)/stats,$(INPUTS) $(TOKENIZER))
$(call vars,$(V)/plan,$(STRATEGY) $(BUDGET) $(SEED) $(SAMPLE_ARGS))
$(call vars,$(V)/shards,$(SEQ_LEN) $(PACKING) $(SEED))
$(call vars,$(V)/heldout,$(HELDOUT) $(TRAIN_SEQ_LEN))
$(call vars,$(V)/train,$(MODEL) $(TRAIN_SEQ_LEN) $(BATCH_TOKENS) $(TRAIN_TOKENS) $(LR) $(SEED) $(TRAIN_ARGS))
$(call vars,$(V)/needle,$(NEEDLE_TASK) $(NEEDLE_MODE) $(NEEDLE_LENGTHS) $(NEEDLE_DEPTHS) $(NEEDLE_ARGS))
$(call vars,$(V)/eval-loss,$(POS_BUCKETS) $(EVAL_SEQUENCES))
endif

stats: $(OUT)/stats/stats.json
sample: $(OUT)/plan/plan.json
shards: $(OUT)/shards/manifest.json
heldout: $(OUT)/heldout/manifest.json
train: $(OUT)/run/final/config.json
needle: $(OUT)/needle/results.json
eval-loss: $(OUT)/eval-loss/loss.json
report: $(OUT)/report.md

$(OUT)/stats/stats.json: $(STAMP) $(CORPUS_FILES) $(TOKENIZER) $(V)/stats
	$(LCDATA) stats $(INPUTS) --tokenizer $(TOKENIZER) --calibrate --out $(OUT)/stats $(WFLAG)

$(OUT)/plan/plan.json: $(OUT)/stats/stats.json $(V)/plan
	$(LCDATA) sample $(INPUTS) --stats $(OUT)/stats --strategy $(STRATEGY) --budget-tokens $(BUDGET) \
		--seed $(SEED) --out $(OUT)/plan $(SAMPLE_ARGS) $(WFLAG)

$(OUT)/shards/manifest.json: $(OUT)/plan/plan.json $(V)/shards
	$(LCDATA) build $(INPUTS) --plan $(OUT)/plan --tokenizer $(TOKENIZER) --seq-len $(SEQ_LEN) \
		--packing $(PACKING) --seed $(SEED) --out $(OUT)/shards --overwrite $(WFLAG)

# held-out documents (HELDOUT), every one once, in windows of the training length; HELDOUT must be named
need_heldout = $(if $(strip $(HELDOUT)),,$(error HELDOUT is empty: name held-out files or globs for eval-loss, \
	documents that INPUTS does not hold))
$(OUT)/heldout/manifest.json: $(STAMP) $(CORPUS_FILES) $(TOKENIZER) $(V)/heldout $(V)/stats
	$(need_heldout)$(LCDATA) build $(HELDOUT) --tokenizer $(TOKENIZER) --seq-len $(TRAIN_SEQ_LEN) \
		--out $(OUT)/heldout --overwrite $(WFLAG)

$(OUT)/run/final/config.json: $(OUT)/shards/manifest.json $(V)/train
	rm -rf $(OUT)/run
	$(LCDATA) train --shards $(OUT)/shards --model $(MODEL) --seq-len $(TRAIN_SEQ_LEN) --batch-tokens $(BATCH_TOKENS) \
		--tokens $(TRAIN_TOKENS) --lr $(LR) --seed $(SEED) --save-every 0 --log-every 8 --out $(OUT)/run $(TRAIN_ARGS)

$(OUT)/needle/results.json: $(OUT)/run/final/config.json $(V)/needle
	$(LCDATA) needle --model $(OUT)/run --tokenizer $(TOKENIZER) --task $(NEEDLE_TASK) --mode $(NEEDLE_MODE) \
		--lengths $(NEEDLE_LENGTHS) --depths $(NEEDLE_DEPTHS) --out $(OUT)/needle $(NEEDLE_ARGS)

$(OUT)/eval-loss/loss.json: $(OUT)/run/final/config.json $(OUT)/heldout/manifest.json $(V)/eval-loss
	$(LCDATA) eval-loss --model $(OUT)/run --labels $(MODEL)-$(STRATEGY) --shards $(OUT)/heldout \
		--position-buckets $(POS_BUCKETS) --max-sequences $(EVAL_SEQUENCES) --out $(OUT)/eval-loss

$(OUT)/report.md: $(OUT)/needle/results.json $(OUT)/eval-loss/loss.json
	$(LCDATA) report $(OUT)

# ---------------------------------------------------------------------------------------- paper ablation
# The paper's comparison in miniature (Fu et al. 2024, "The mixtures compared"): the same base model (trained
# briefly at short length on the natural mixture) continues training at a longer length on each mixture, at
# the same budget; then per-source loss at short vs long positions on held-out documents, and needle scores.
# CPU toy size by default (minutes); scale with the variables (e.g. ABL_BASE=/models/Llama-2-7b-hf
# ABL_SEQ_LEN=65536 ABL_TOKENS=1B on GPUs: then the given model is the base and is not trained first).
ABL            ?= out/ablation
ABL_STRATEGIES ?= natural per-source upsample-sources
ABL_UPSAMPLE   ?= --source-share books=0.5
ABL_BUDGET     ?= 1M
ABL_BASE_SEQ_LEN ?= 256
ABL_BASE_TOKENS  ?= 262144
ABL_SEQ_LEN    ?= 1024
ABL_TOKENS     ?= 131072
ABL_LR         ?= 1e-3
ABL_POS_BUCKETS ?= 0,256
# ABL_BASE: an existing model (HF folder or run) to continue from; empty = a MODEL trained here at ABL_BASE_SEQ_LEN
ABL_BASE       ?=
ABL_BASE_MODEL := $(or $(ABL_BASE),$(ABL)/base/run/final)
AV := $(ABL)/.vars
ifneq ($(filter paper-ablation $(ABL)/%,$(MAKECMDGOALS)),)
$(call vars,$(AV)/stats,$(INPUTS) $(TOKENIZER))
$(call vars,$(AV)/plan,$(ABL_BUDGET) $(ABL_UPSAMPLE) $(SEED))
$(call vars,$(AV)/shards,$(ABL_SEQ_LEN) $(ABL_BASE_SEQ_LEN))
$(call vars,$(AV)/base,$(MODEL) $(ABL_BASE_TOKENS) $(LR) $(BATCH_TOKENS))
$(call vars,$(AV)/train,$(ABL_BASE) $(ABL_TOKENS) $(ABL_LR) $(BATCH_TOKENS) $(TRAIN_ARGS))
$(call vars,$(AV)/needle,$(NEEDLE_TASK) $(NEEDLE_MODE) $(NEEDLE_LENGTHS) $(NEEDLE_DEPTHS) $(NEEDLE_ARGS))
$(call vars,$(AV)/eval-loss,$(ABL_STRATEGIES) $(ABL_POS_BUCKETS) $(EVAL_SEQUENCES) $(HELDOUT))
endif

paper-ablation: $(ABL)/report.md
	@echo "lcdata paper-ablation: open $(ABL)/report.md"

$(ABL)/stats/stats.json: $(STAMP) $(CORPUS_FILES) $(TOKENIZER) $(AV)/stats
	$(LCDATA) stats $(INPUTS) --tokenizer $(TOKENIZER) --out $(ABL)/stats --quiet $(WFLAG)

$(ABL)/%/plan/plan.json: $(ABL)/stats/stats.json $(AV)/plan
	$(LCDATA) sample $(INPUTS) --stats $(ABL)/stats --strategy $* --budget-tokens $(ABL_BUDGET) --seed $(SEED) \
		--out $(ABL)/$*/plan $(if $(filter upsample-sources,$*),$(ABL_UPSAMPLE)) --quiet $(WFLAG)

$(ABL)/%/shards/manifest.json: $(ABL)/%/plan/plan.json $(AV)/shards
	$(LCDATA) build $(INPUTS) --plan $(ABL)/$*/plan --tokenizer $(TOKENIZER) --seq-len $(ABL_SEQ_LEN) \
		--seed $(SEED) --out $(ABL)/$*/shards --overwrite $(WFLAG)

$(ABL)/base/shards/manifest.json: $(ABL)/natural/plan/plan.json $(AV)/shards
	$(LCDATA) build $(INPUTS) --plan $(ABL)/natural/plan --tokenizer $(TOKENIZER) --seq-len $(ABL_BASE_SEQ_LEN) \
		--seed $(SEED) --out $(ABL)/base/shards --overwrite $(WFLAG)

$(ABL)/base/run/final/config.json: $(ABL)/base/shards/manifest.json $(AV)/base
	rm -rf $(ABL)/base/run
	$(LCDATA) train --shards $(ABL)/base/shards --model $(MODEL) --batch-tokens $(BATCH_TOKENS) \
		--tokens $(ABL_BASE_TOKENS) --lr $(LR) --seed $(SEED) --save-every 0 --log-every 16 --out $(ABL)/base/run

$(ABL)/%/run/final/config.json: $(ABL)/%/shards/manifest.json $(AV)/train \
		$(if $(ABL_BASE),,$(ABL)/base/run/final/config.json)
	rm -rf $(ABL)/$*/run
	$(LCDATA) train --shards $(ABL)/$*/shards --model $(ABL_BASE_MODEL) --seq-len $(ABL_SEQ_LEN) \
		--batch-tokens $(BATCH_TOKENS) --tokens $(ABL_TOKENS) --lr $(ABL_LR) --seed $(SEED) --save-every 0 \
		--log-every 16 --out $(ABL)/$*/run $(TRAIN_ARGS)

$(ABL)/heldout/manifest.json: $(STAMP) $(CORPUS_FILES) $(TOKENIZER) $(AV)/eval-loss $(AV)/shards
	$(need_heldout)$(LCDATA) build $(HELDOUT) --tokenizer $(TOKENIZER) --seq-len $(ABL_SEQ_LEN) --out $(ABL)/heldout --overwrite $(WFLAG)

$(ABL)/%/needle/results.json: $(ABL)/%/run/final/config.json $(AV)/needle
	$(LCDATA) needle --model $(ABL)/$*/run --tokenizer $(TOKENIZER) --task $(NEEDLE_TASK) --mode $(NEEDLE_MODE) \
		--lengths $(NEEDLE_LENGTHS) --depths $(NEEDLE_DEPTHS) --out $(ABL)/$*/needle --quiet $(NEEDLE_ARGS)

$(ABL)/eval-loss/loss.json: $(foreach s,$(ABL_STRATEGIES),$(ABL)/$(s)/run/final/config.json) $(ABL)/heldout/manifest.json \
		$(AV)/eval-loss
	$(LCDATA) eval-loss --model $(foreach s,$(ABL_STRATEGIES),$(ABL)/$(s)/run) --labels $(ABL_STRATEGIES) \
		--shards $(ABL)/heldout --position-buckets $(ABL_POS_BUCKETS) --max-sequences $(EVAL_SEQUENCES) \
		--out $(ABL)/eval-loss

$(ABL)/report.md: $(ABL)/eval-loss/loss.json $(foreach s,$(ABL_STRATEGIES),$(ABL)/$(s)/needle/results.json)
	$(LCDATA) report $(ABL) --ablation $(ABL_STRATEGIES)

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf out .pytest_cache
