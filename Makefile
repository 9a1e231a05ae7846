# lcdata front door. `make demo` creates .venv if missing and installs what the pipeline needs (`.[train,fast]`);
# `make test` (and lint, bench) also installs `[dev]` and megatron-core into it. Each install is a stamp file in
# .venv, redone when pyproject.toml changes: STAMP (the pipeline's), DEV_STAMP (test tools, after STAMP).
# torch==2.13.0 is installed first: it is the locally available CPU wheel, inside the package's range.
#
# The pipeline uses file targets with real dependencies, so a re-run redoes only what changed:
#   $(OUT)/stats/stats.json -> plan/plan.json -> shards/manifest.json -> run/final/config.json
#        -> needle/results.json + eval-loss/loss.json (on heldout/manifest.json) -> report.md
# `make shards`, `make train`, `make needle`, `make eval-loss`, `make report` stop at each stage.
# `make paper-ablation`: natural vs per-source vs one-domain-upsampled data, same base model, same budget.

# the interpreter: the venv's when there is one (gpu-check runs on a GPU image's python as it is, installing nothing)
PYTHON    ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
VENV      ?= .venv
BIN       ?= $(VENV)/bin
STAMP     ?= $(VENV)/.lcdata-installed
DEV_STAMP ?= $(if $(STAMP),$(VENV)/.lcdata-dev-installed)
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
# training (CPU-sized defaults: a debug model from scratch on 1K-token windows of the shards). DEMO picks the
# size of the training run and of the loss evaluation: `quick` (default; the demo's main job in about two
# minutes on 2 shared cores), `full` (4x the training tokens and the evaluated windows: the longer run). Any of
# the variables it sets can still be given on its own (make demo TRAIN_TOKENS=1M).
DEMO      ?= quick
ifeq ($(DEMO),full)
TRAIN_TOKENS  ?= 131072
EVAL_SEQUENCES ?= 64
LOG_EVERY     ?= 8
else ifeq ($(DEMO),quick)
TRAIN_TOKENS  ?= 32768
EVAL_SEQUENCES ?= 16
LOG_EVERY     ?= 2
else
$(error DEMO='$(DEMO)' is not quick or full)
endif
MODEL     ?= debug
TRAIN_SEQ_LEN ?= 1024
BATCH_TOKENS  ?= 4096
LR        ?= 3e-3
TRAIN_ARGS ?=
# CPU threads of the torch stages (train, needle, eval-loss; OMP_NUM_THREADS): 1 by default, as the debug model
# gains nothing from more, and on 2 shared cores 2 threads trained 2-4x slower than 1 (OpenMP's spinning
# threads; same losses). Empty: torch's default (all cores), for bigger models on a machine of your own.
TORCH_THREADS ?= 1
# evaluation
NEEDLE_TASK    ?= needle
NEEDLE_MODE    ?= teacher-forced
NEEDLE_LENGTHS ?= 256:1024:4
NEEDLE_DEPTHS  ?= 0:100:5
NEEDLE_ARGS    ?=
POS_BUCKETS    ?= 0,512
# a token's position: in its own document, or in the packed window as the paper (docs/eval.md)
EVAL_POSITION  ?= document
# Paths with spaces (OUT, CORPUS, TOKENIZER, BIN). Make splits file names on spaces, so the two places a path
# goes are kept apart: $(call q,PATH) is one quoted shell word, for commands; $(call t,PATH) is the same path
# with spaces and colons escaped by a backslash, for make's own file names (targets and prerequisites of the
# explicit rules below: GNU make reads `a\ b/x` as one file). Recipes never use $@, $< or $^ (make gives
# those unescaped); they name their paths with q. So the real output files stay the targets (not stamp files
# kept elsewhere): their times are the dependencies, and a deleted or edited output re-runs its stage.
# INPUTS and HELDOUT are shell words as typed: quote a path with spaces inside them (INPUTS="'my corpus/x'").
# Pattern rules cannot match escaped names, so the paper ablation's ABL must be free of spaces (checked).
space := $(subst x,,x x)
q = '$(subst ','\'',$(1))'
t = $(subst :,\:,$(subst $(space),\$(space),$(1)))
O := $(call t,$(OUT))
LCDATA    := $(call q,$(BIN)/lcdata)
TORCH_LCDATA = $(if $(TORCH_THREADS),OMP_NUM_THREADS=$(TORCH_THREADS) )$(LCDATA)
TOK       := $(call q,$(TOKENIZER))

# A stage also re-runs when its variables change. Reading the Makefile writes nothing (`make -n` and `make -q`
# create no file or folder): $(call changed,DIR,NAME,TEXT) is FORCE when the file DIR/NAME does not hold TEXT
# (so the stage re-runs, and by their times the stages after it), and the stage's recipe records TEXT there
# with $(call record,DIR,NAME,TEXT) once its command succeeded (a failed stage is re-run next time).
same = $(and $(findstring x$(1)x,x$(2)x),$(findstring x$(2)x,x$(1)x))
changed = $(if $(call same,$(strip $(3)),$(strip $(file <$(1)/$(2)))),,FORCE)
record = mkdir -p $(call q,$(1)) && printf '%s\n' $(call q,$(strip $(3))) > $(call q,$(1)/$(2))
WFLAG     := $(if $(WORKERS),--workers $(WORKERS))
# every corpus file (escaped for make) and the tokenizer (unless a URL) are prerequisites: an edit re-runs
CORPUS_FILES := $(shell find $(call q,$(CORPUS)) -type f \( -name '*.jsonl*' -o -name '*.json.zst' -o \
	-name '*.json.gz' -o -name '*.parquet' \) 2>/dev/null | LC_ALL=C sort | sed 's/[ :]/\\&/g')
TOK_FILE  := $(if $(findstring ://,$(TOKENIZER)),,$(call t,$(TOKENIZER)))
# INPUTS feed stats/sample/build; HELDOUT (files, folders or globs, quoted) feeds eval-loss and must not overlap them.
# The demo holds out one part file per source; for another CORPUS, INPUTS is all of it and HELDOUT is yours to name.
ifeq ($(CORPUS),data/demo)
INPUTS    ?= '$(CORPUS)/*/part-000.jsonl.zst' '$(CORPUS)/[!w]*/part-001.jsonl.zst'
HELDOUT   ?= '$(CORPUS)/*/part-002.jsonl.zst' '$(CORPUS)/web/part-001.jsonl.zst'
else
INPUTS    ?= $(call q,$(CORPUS))
HELDOUT   ?=
endif

.SECONDARY:
.PHONY: venv venv-dev test demo stats sample shards heldout train needle eval-loss report paper-ablation lint bench \
	gpu-check slurm-up slurm-down slurm-status clean FORCE

# the pipeline's install (make demo and every stage)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[train,fast]"
	touch $(STAMP)

# the test tools on top (make test, lint, bench): upgrades a demo venv; redone after the pipeline's install
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[train,fast,dev]"
	$(BIN)/python -m pip install -q --no-deps megatron-core
	touch $(DEV_STAMP)

venv: $(STAMP)

venv-dev: $(DEV_STAMP)

test: venv-dev
	$(BIN)/python -m pytest -q tests

lint: venv-dev
	$(BIN)/ruff check lcdata lcdata_train tests benchmarks scripts

# The main job on the embedded demo corpus: statistics, a per-source sample, packed shards (verified), a short
# continual-pretraining run, the needle evaluation and per-source/position loss, and out/demo/report.md.
demo: venv report
	$(LCDATA) verify $(call q,$(OUT)/shards)
	@echo "lcdata demo: open $(OUT)/report.md"

# each stage's variables, kept in $(OUT)/.vars/STAGE
V := $(OUT)/.vars
VARS_stats     = $(INPUTS) $(TOKENIZER)
VARS_plan      = $(STRATEGY) $(BUDGET) $(SEED) $(SAMPLE_ARGS)
VARS_shards    = $(SEQ_LEN) $(PACKING) $(SEED)
VARS_heldout   = $(HELDOUT) $(TOKENIZER) $(TRAIN_SEQ_LEN)
VARS_train     = $(MODEL) $(TRAIN_SEQ_LEN) $(BATCH_TOKENS) $(TRAIN_TOKENS) $(LR) $(SEED) $(LOG_EVERY) $(TRAIN_ARGS)
VARS_needle    = $(NEEDLE_TASK) $(NEEDLE_MODE) $(NEEDLE_LENGTHS) $(NEEDLE_DEPTHS) $(NEEDLE_ARGS)
VARS_eval-loss = $(POS_BUCKETS) $(EVAL_POSITION) $(EVAL_SEQUENCES)
stage_changed = $(call changed,$(V),$(1),$(VARS_$(1)))
stage_record = $(call record,$(V),$(1),$(VARS_$(1)))

stats: $(O)/stats/stats.json
sample: $(O)/plan/plan.json
shards: $(O)/shards/manifest.json
heldout: $(O)/heldout/manifest.json
train: $(O)/run/final/config.json
needle: $(O)/needle/results.json
eval-loss: $(O)/eval-loss/loss.json
report: $(O)/report.md

$(O)/stats/stats.json: $(STAMP) $(CORPUS_FILES) $(TOK_FILE) $(call stage_changed,stats)
	$(LCDATA) stats $(INPUTS) --tokenizer $(TOK) --calibrate --out $(call q,$(OUT)/stats) --overwrite $(WFLAG)
	@$(call stage_record,stats)

$(O)/plan/plan.json: $(O)/stats/stats.json $(call stage_changed,plan)
	$(LCDATA) sample $(INPUTS) --stats $(call q,$(OUT)/stats) --strategy $(STRATEGY) --budget-tokens $(BUDGET) \
		--seed $(SEED) --out $(call q,$(OUT)/plan) --overwrite $(SAMPLE_ARGS) $(WFLAG)
	@$(call stage_record,plan)

$(O)/shards/manifest.json: $(O)/plan/plan.json $(call stage_changed,shards)
	$(LCDATA) build $(INPUTS) --plan $(call q,$(OUT)/plan) --tokenizer $(TOK) --seq-len $(SEQ_LEN) \
		--packing $(PACKING) --seed $(SEED) --out $(call q,$(OUT)/shards) --overwrite $(WFLAG)
	@$(call stage_record,shards)

# held-out documents (HELDOUT), every one once, in windows of the training length
$(O)/heldout/manifest.json: $(STAMP) $(CORPUS_FILES) $(TOK_FILE) $(call stage_changed,heldout)
	$(LCDATA) build $(HELDOUT) --tokenizer $(TOK) --seq-len $(TRAIN_SEQ_LEN) --out $(call q,$(OUT)/heldout) \
		--overwrite $(WFLAG)
	@$(call stage_record,heldout)

$(O)/run/final/config.json: $(O)/shards/manifest.json $(call stage_changed,train)
	$(TORCH_LCDATA) train --shards $(call q,$(OUT)/shards) --model $(MODEL) --seq-len $(TRAIN_SEQ_LEN) \
		--batch-tokens $(BATCH_TOKENS) --tokens $(TRAIN_TOKENS) --lr $(LR) --seed $(SEED) --save-every 0 \
		--log-every $(LOG_EVERY) --out $(call q,$(OUT)/run) --overwrite $(TRAIN_ARGS)
	@$(call stage_record,train)

$(O)/needle/results.json: $(O)/run/final/config.json $(call stage_changed,needle)
	$(TORCH_LCDATA) needle --model $(call q,$(OUT)/run) --tokenizer $(TOK) --task $(NEEDLE_TASK) --mode $(NEEDLE_MODE) \
		--lengths $(NEEDLE_LENGTHS) --depths $(NEEDLE_DEPTHS) --out $(call q,$(OUT)/needle) --overwrite $(NEEDLE_ARGS)
	@$(call stage_record,needle)

$(O)/eval-loss/loss.json: $(O)/run/final/config.json $(O)/heldout/manifest.json $(call stage_changed,eval-loss)
	$(TORCH_LCDATA) eval-loss --model $(call q,$(OUT)/run) --name $(call q,$(notdir $(patsubst %/,%,$(MODEL)))-$(STRATEGY)) --shards $(call q,$(OUT)/heldout) \
		--position-buckets $(POS_BUCKETS) --position $(call q,$(EVAL_POSITION)) --max-sequences $(EVAL_SEQUENCES) \
		--out $(call q,$(OUT)/eval-loss) --overwrite
	@$(call stage_record,eval-loss)

$(O)/report.md: $(O)/needle/results.json $(O)/eval-loss/loss.json
	$(LCDATA) report $(call q,$(OUT))

# ---------------------------------------------------------------------------------------- paper ablation
# The paper's comparison in miniature (Fu et al. 2024, "The mixtures compared"): the same base model (trained
# briefly at short length on the natural mixture) continues training at a longer length on each mixture, at
# the same budget, once per seed in ABL_SEEDS (a seed draws its own sample, packing and data order); then
# per-source loss at short vs long positions on held-out documents for every run and for a unigram model of
# every run's shards, and needle scores. The report gives each strategy's paired difference to the first
# strategy with a bootstrap interval over seeds and held-out windows, "not significant" where it holds 0, and
# the unigram's difference beside it (docs/eval.md, "Results with their noise").
# CPU toy size by default (minutes); scale with the variables (docs/eval.md gives the GPU experiment, e.g.
# MODEL=small ABL_BASE_SEQ_LEN=4096 ABL_SEQ_LEN=32768 ABL_TOKENS=250M on an H200; ABL_BASE=/models/... to
# continue from an existing model, which is then not trained here).
# Layout: ABL/stats, ABL/base/{plan,shards,run}, ABL/<strategy>/seed-<K>/{plan,shards,run,needle},
# ABL/heldout, ABL/eval-loss, ABL/report.md.
ABL            ?= out/ablation
ABL_STRATEGIES ?= natural per-source upsample-sources
ABL_SEEDS      ?= 0 1 2
ABL_UPSAMPLE   ?= --source-share books=0.5
ABL_BUDGET     ?= 1M
ABL_BASE_SEQ_LEN ?= 256
ABL_BASE_TOKENS  ?= 262144
ABL_SEQ_LEN    ?= 1024
ABL_TOKENS     ?= 131072
ABL_LR         ?= 1e-3
ABL_POS_BUCKETS ?= 0,256
ABL_EVAL_SEQUENCES ?= 256
# ABL_BASE: an existing model (HF folder or run) to continue from; empty = a MODEL trained here at ABL_BASE_SEQ_LEN
ABL_BASE       ?=
ABL_BASE_MODEL := $(or $(ABL_BASE),$(ABL)/base/run/final)
ifneq ($(words $(ABL)),1)
$(error ABL='$(ABL)' holds a space: make's pattern rules cannot name such files; choose an ABL without spaces)
endif
ifneq ($(shell printf '%s\n' $(ABL_SEEDS) | grep -cvxE '[0-9]+'),0)
$(error ABL_SEEDS='$(ABL_SEEDS)' must be non-negative integers separated by spaces, e.g. ABL_SEEDS="0 1 2")
endif
ifeq ($(strip $(ABL_SEEDS)),)
$(error ABL_SEEDS is empty: give at least one seed (3 or more to estimate run-to-run noise), e.g. ABL_SEEDS="0 1 2")
endif
# every (strategy, seed) run, as the folder below ABL: natural/seed-0 ...; a stem's strategy and seed
ABL_RUNS := $(foreach s,$(ABL_STRATEGIES),$(foreach k,$(ABL_SEEDS),$(s)/seed-$(k)))
abl_strategy = $(firstword $(subst /, ,$(1)))
abl_seed = $(patsubst seed-%,%,$(lastword $(subst /, ,$(1))))
abl_label = $(call abl_strategy,$(1))@$(call abl_seed,$(1))
# each stage's variables, kept in $(ABL)/.vars/STAGE (per run where a rule makes one folder per run)
AV := $(ABL)/.vars
AVARS_stats     = $(INPUTS) $(TOKENIZER)
AVARS_plan      = $(ABL_BUDGET) $(ABL_UPSAMPLE) $(SEED)
AVARS_shards    = $(ABL_SEQ_LEN) $(ABL_BASE_SEQ_LEN) $(TOKENIZER)
AVARS_base      = $(MODEL) $(ABL_BASE_TOKENS) $(LR) $(BATCH_TOKENS)
AVARS_train     = $(ABL_BASE) $(ABL_TOKENS) $(ABL_LR) $(BATCH_TOKENS) $(TRAIN_ARGS)
AVARS_needle    = $(NEEDLE_TASK) $(NEEDLE_MODE) $(NEEDLE_LENGTHS) $(NEEDLE_DEPTHS) $(NEEDLE_ARGS) $(TOKENIZER)
AVARS_eval-loss = $(ABL_RUNS) $(ABL_POS_BUCKETS) $(ABL_EVAL_SEQUENCES) $(HELDOUT) $(TOKENIZER)
# $(call abl_changed,STAGE[,RUN]) and $(call abl_record,STAGE[,RUN]), as stage_changed/stage_record;
# in a pattern rule's prerequisites, written $$(call abl_changed,STAGE,$$*) (expanded per target)
abl_changed = $(call changed,$(AV),$(1)$(if $(2),-$(subst /,-,$(2))),$(AVARS_$(1)))
abl_record = $(call record,$(AV),$(1)$(if $(2),-$(subst /,-,$(2))),$(AVARS_$(1)))
.SECONDEXPANSION:

paper-ablation: $(ABL)/report.md
	@echo "lcdata paper-ablation: open $(ABL)/report.md"

$(ABL)/stats/stats.json: $(STAMP) $(CORPUS_FILES) $(TOK_FILE) $(call abl_changed,stats)
	$(LCDATA) stats $(INPUTS) --tokenizer $(TOK) --out $(ABL)/stats --overwrite --quiet $(WFLAG)
	@$(call abl_record,stats)

$(ABL)/%/plan/plan.json: $(ABL)/stats/stats.json $$(call abl_changed,plan,$$*)
	$(LCDATA) sample $(INPUTS) --stats $(ABL)/stats --strategy $(call abl_strategy,$*) --budget-tokens $(ABL_BUDGET) \
		--seed $(call abl_seed,$*) --out $(ABL)/$*/plan --overwrite \
		$(if $(filter upsample-sources,$(call abl_strategy,$*)),$(ABL_UPSAMPLE)) --quiet $(WFLAG)
	@$(call abl_record,plan,$*)

$(ABL)/%/shards/manifest.json: $(ABL)/%/plan/plan.json $$(call abl_changed,shards,$$*)
	$(LCDATA) build $(INPUTS) --plan $(ABL)/$*/plan --tokenizer $(TOK) --seq-len $(ABL_SEQ_LEN) \
		--seed $(call abl_seed,$*) --out $(ABL)/$*/shards --overwrite $(WFLAG)
	@$(call abl_record,shards,$*)

# the base model: the natural mixture at SEED, at the short length
$(ABL)/base/plan/plan.json: $(ABL)/stats/stats.json $(call abl_changed,plan,base)
	$(LCDATA) sample $(INPUTS) --stats $(ABL)/stats --strategy natural --budget-tokens $(ABL_BUDGET) --seed $(SEED) \
		--out $(ABL)/base/plan --overwrite --quiet $(WFLAG)
	@$(call abl_record,plan,base)

$(ABL)/base/shards/manifest.json: $(ABL)/base/plan/plan.json $(call abl_changed,shards,base)
	$(LCDATA) build $(INPUTS) --plan $(ABL)/base/plan --tokenizer $(TOK) --seq-len $(ABL_BASE_SEQ_LEN) \
		--seed $(SEED) --out $(ABL)/base/shards --overwrite $(WFLAG)
	@$(call abl_record,shards,base)

$(ABL)/base/run/final/config.json: $(ABL)/base/shards/manifest.json $(call abl_changed,base)
	$(TORCH_LCDATA) train --shards $(ABL)/base/shards --model $(MODEL) --batch-tokens $(BATCH_TOKENS) \
		--tokens $(ABL_BASE_TOKENS) --lr $(LR) --seed $(SEED) --save-every 0 --log-every 16 --out $(ABL)/base/run \
		--overwrite
	@$(call abl_record,base)

$(ABL)/%/run/final/config.json: $(ABL)/%/shards/manifest.json $$(call abl_changed,train,$$*) \
		$(if $(ABL_BASE),,$(ABL)/base/run/final/config.json)
	$(TORCH_LCDATA) train --shards $(ABL)/$*/shards --model $(call q,$(ABL_BASE_MODEL)) --seq-len $(ABL_SEQ_LEN) \
		--batch-tokens $(BATCH_TOKENS) --tokens $(ABL_TOKENS) --lr $(ABL_LR) --seed $(call abl_seed,$*) \
		--save-every 0 --log-every 16 --out $(ABL)/$*/run --overwrite $(TRAIN_ARGS)
	@$(call abl_record,train,$*)

$(ABL)/heldout/manifest.json: $(STAMP) $(CORPUS_FILES) $(TOK_FILE) $(call abl_changed,eval-loss,heldout) \
		$(call abl_changed,shards,heldout)
	$(LCDATA) build $(HELDOUT) --tokenizer $(TOK) --seq-len $(ABL_SEQ_LEN) --out $(ABL)/heldout --overwrite $(WFLAG)
	@$(call abl_record,eval-loss,heldout) && $(call abl_record,shards,heldout)

$(ABL)/%/needle/results.json: $(ABL)/%/run/final/config.json $$(call abl_changed,needle,$$*)
	$(TORCH_LCDATA) needle --model $(ABL)/$*/run --tokenizer $(TOK) --task $(NEEDLE_TASK) --mode $(NEEDLE_MODE) \
		--lengths $(NEEDLE_LENGTHS) --depths $(NEEDLE_DEPTHS) --out $(ABL)/$*/needle --overwrite --quiet $(NEEDLE_ARGS)
	@$(call abl_record,needle,$*)

# every run, and the unigram model of every run's shards (the token-frequency baseline), on the same windows
$(ABL)/eval-loss/loss.json: $(foreach r,$(ABL_RUNS),$(ABL)/$(r)/run/final/config.json $(ABL)/$(r)/shards/manifest.json) \
		$(ABL)/heldout/manifest.json $(call abl_changed,eval-loss)
	$(TORCH_LCDATA) eval-loss --model $(foreach r,$(ABL_RUNS),$(ABL)/$(r)/run) $(foreach r,$(ABL_RUNS),unigram:$(ABL)/$(r)/shards) \
		--name $(foreach r,$(ABL_RUNS),$(call abl_label,$(r))) $(foreach r,$(ABL_RUNS),unigram:$(call abl_label,$(r))) \
		--shards $(ABL)/heldout --position-buckets $(ABL_POS_BUCKETS) --max-sequences $(ABL_EVAL_SEQUENCES) \
		--out $(ABL)/eval-loss --overwrite --quiet
	@$(call abl_record,eval-loss)

$(ABL)/report.md: $(ABL)/eval-loss/loss.json $(foreach r,$(ABL_RUNS),$(ABL)/$(r)/needle/results.json)
	$(LCDATA) report $(ABL) --ablation $(ABL_STRATEGIES) --seeds $(ABL_SEEDS)

# HELDOUT is checked when make reads the Makefile, before any stage runs (not after training): it must name
# corpus files, each word must match some, and none may be among INPUTS' (scripts/check_heldout.sh). Only
# for goals that use it; the check reads the corpus folders and writes nothing.
ifneq ($(or $(filter heldout eval-loss report demo paper-ablation,$(MAKECMDGOALS)),\
	$(findstring heldout/,$(MAKECMDGOALS)),$(findstring eval-loss/,$(MAKECMDGOALS)),$(findstring report.md,$(MAKECMDGOALS))),)
heldout_error := $(shell sh scripts/check_heldout.sh $(INPUTS) -- $(HELDOUT))
$(if $(heldout_error),$(error $(heldout_error)))
endif

bench: venv-dev
	$(BIN)/python benchmarks/run_all.py

# One command for a lent GPU (benchmarks/gpu_check.py, < 8 minutes on one H200): correctness, speed, end to
# end, each part under a hard time budget; results in $OUT when set, else out/gpu-check (summary.md first).
# It installs nothing and needs no venv: PYTHON is the venv's python if there is one, else python3.
# DRY=1: the same script on CPU at tiny sizes (under a minute; tests/test_gpu_check.py runs it in `make test`).
GPU_CHECK_ARGS ?=
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py $(if $(DRY),--dry) $(GPU_CHECK_ARGS)

clean:
	rm -rf out .pytest_cache

# A single-node Slurm cluster on this machine (root; installs slurm-wlm and munge with apt-get if missing), for
# `--executor slurm` and tests/scaleout/test_slurm_real.py; no venv needed (docs/scale-out.md, "Slurm locally").
slurm-up:
	bash scripts/slurm_local.sh up

slurm-down:
	bash scripts/slurm_local.sh down

slurm-status:
	bash scripts/slurm_local.sh status
