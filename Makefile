# attnfast: the two commands of the README.
#   make demo   create .venv, install, train briefly on the built-in shapes data, sample with attention maps
#   make test   create .venv, install, run the test suite
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.attnfast-installed
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test install clean gpu-test bench

install: $(STAMP)

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

test: $(STAMP)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

gpu-test: $(STAMP)
	$(VPY) -m pytest -q -m gpu

demo: $(STAMP)
	$(VPY) -m attnfast.demo --out $(DEMO_OUT)

bench: $(STAMP)
	for b in bench/*_bench.py; do $(VPY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info runs
