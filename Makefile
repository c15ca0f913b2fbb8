# scenefit — the two commands a newcomer runs: `make demo` and `make test`.
# Each creates or refreshes .venv from this checkout and then runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO_DIR ?= runs/demo
VERBOSE ?= 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test bench browser clean

# The stamp depends on pyproject.toml, so a change of dependencies refreshes the venv.
$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel of 2.13.0 (a bare `torch` can pull a CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

# One torch thread: the tiny models' small matrices gain little from a second core, idle threads spin
# on a busy machine (7x the CPU time measured beside other jobs), and the figures then do not depend
# on the number of cores (docs/demo-results.md, "Where stage 1 diverges between CPUs").
# The demo is the product's own path: `scenefit run` on the packaged demo config (a rerun keeps
# the stages that are done and continues the others; `make clean` starts over).
demo: export OMP_NUM_THREADS ?= 1
demo: venv
	$(VENV)/bin/scenefit run --config demo --out $(DEMO_DIR) $(if $(filter 1,$(VERBOSE)),--verbose,)

# Debian's chromium + chromedriver for the browser tests (report rendering, web page).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "warning: could not install chromium; browser tests will be skipped"; }

test: venv browser
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
