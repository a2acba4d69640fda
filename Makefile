# attnfast: the two commands of the README.
#   make demo   create .venv, install, train briefly on the built-in shapes data, sample with attention maps
#   make test   create .venv, install (with requirements-dev.txt), run the test suite
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.attnfast-installed
DEV_STAMP := $(VENV)/.attnfast-dev-installed
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test install install-dev docs clean gpu-test bench kernel-report kernel-report-triton36 gpu-check gpu-check-dry
.PHONY: lint mutate

install: $(STAMP)

install-dev: $(DEV_STAMP)

# docs: the site into build/site (mkdocs.yml; make test builds it with --strict too)
docs: $(DEV_STAMP)
	$(VPY) -m mkdocs build --strict --site-dir build/site

# A CUDA build of torch already on the machine is kept (the venv sees it through
# --system-site-packages); otherwise the CPU build torch==2.13.0 is pinned, because an
# unpinned torch pulls a CUDA build of several GB.
$(STAMP): requirements.txt setup.py pyproject.toml $(wildcard csrc/*)
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)" 2>/dev/null; then \
	    echo "attnfast: keeping the machine's CUDA torch"; \
	    [ -x $(VPY) ] || $(PY) -m venv --system-site-packages $(VENV); \
	else \
	    [ -x $(VPY) ] || $(PY) -m venv $(VENV); \
	    $(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install --quiet "torch==2.13.0"; \
	fi
	$(VPY) -m pip install --quiet -r requirements.txt
	$(if $(CI),ATTNFAST_REQUIRE_EXT=1) $(VPY) -m pip install --quiet --no-build-isolation -e .
	@touch $(STAMP)

# Developer tools (requirements-dev.txt: lint, docs site, API contract tests), apart from the runtime
# install so that a change of them does not rebuild the extension.
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	@touch $(DEV_STAMP)

test: $(STAMP) $(DEV_STAMP) lint
	$(VPY) -m pytest -q $(PYTEST_ARGS)

# --- lint and mutation check (issue 30) -----------------------------------------------------
# lint: ruff (pyproject [tool.ruff]) and import-linter's layer contracts (pyproject
# [tool.importlinter]), both from requirements-dev.txt; `make test` runs it before pytest.
# mutate: single-site bugs in reference/, ops/ and the loss code, each run against the tests of its
# file (bench/mutate.py; score in the README); slow, not part of `make test`.
# make mutate MUTATE_ARGS=--extension adds the C++ mutants (each an out-of-tree build).
lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

MUTATE_ARGS ?=

mutate: $(STAMP)
	$(VPY) bench/mutate.py $(MUTATE_ARGS)
# --- end lint and mutation check ------------------------------------------------------------

gpu-test: $(STAMP)
	$(VPY) -m pytest -q -m gpu

demo: $(STAMP)
	$(VPY) -m attnfast.demo --out $(DEMO_OUT)

bench: $(STAMP)
	for b in bench/*_bench.py; do $(VPY) $$b || exit 1; done

# GPU readiness (issue 18). kernel-report: every kernel compiled for sm_80/sm_90 with this machine's
# triton, resources into bench/results/kernel_resources.json; kernel-report-triton36: the same under
# triton 3.6 (the GPU machines' version), installed apart in build/triton36 (the venv's triton untouched).
TRITON36 := build/triton36

kernel-report: $(STAMP)
	TRITON_DEFAULT_FP_FUSION=1 $(VPY) bench/kernel_resources.py

$(TRITON36)/.installed:
	$(VPY) -m pip install --quiet --no-deps --target $(TRITON36) "triton==3.6.*"
	@touch $@

kernel-report-triton36: $(STAMP) $(TRITON36)/.installed
	PYTHONPATH=$(abspath $(TRITON36)) TRITON_DEFAULT_FP_FUSION=1 $(VPY) bench/kernel_resources.py

# gpu-check OUT=dir: on a lent GPU, from a fresh clone: install (extension for this GPU's arch only),
# pytest -m gpu, every bench in --gpu-quick, the targets' summary; at most 8 files in OUT.
# gpu-check-dry: the same script on the CPU with tiny shapes.
gpu-check:
	@test -n "$(OUT)" || { echo "usage: make gpu-check OUT=dir"; exit 2; }
	$(PY) bench/gpu_check.py --out $(OUT)

gpu-check-dry: $(STAMP)
	$(PY) bench/gpu_check.py --dry-run --out $(or $(OUT),runs/gpu-check-dry)

clean:
	rm -rf $(VENV) build *.egg-info runs
