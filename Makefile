# lcdata front door. `make demo` and `make test` each create .venv if missing and install everything.
# torch==2.13.0 is installed first: it is the locally available CPU wheel, inside the package's range.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lcdata-installed
OUT    ?= out/demo
CORPUS ?= data/demo
TOKENIZER ?= data/demo/tokenizer.json
WORKERS ?=

.PHONY: venv test demo stats lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[train,dev]"
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check lcdata lcdata_train tests benchmarks scripts

# The main job on the embedded demo corpus.
demo: venv stats

stats: venv
	$(BIN)/lcdata stats $(CORPUS) --tokenizer $(TOKENIZER) --calibrate --out $(OUT)/stats $(if $(WORKERS),--workers $(WORKERS))

bench: venv
	$(BIN)/python benchmarks/bench_stats.py

clean:
	rm -rf out .pytest_cache
