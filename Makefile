# The course in two commands:
#   make lab    create the environment if missing, then open JupyterLab on the course
#   make test   create the environment if missing, then run the whole test suite
#               (unit tests + every notebook re-executed with smoke settings)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dlwb-installed
JOBS   ?= auto
LAB_ARGS ?=

# Test data directories searched before any download (the course's shared data, when present).
export DLWB_DATA_DIR ?= $(abspath $(wildcard ../shared/data))
# TensorFlow's C++ start-up logging: warnings and errors only.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: lab test bench env constraints clean

# mimalloc, where requirements.txt installs it (Linux x86_64): the course's Jupyter kernel and `make bench`
# preload it (chapter 04, "Memory and layout"). Empty elsewhere. Only Python processes get it: Chromium,
# which the browser tests start, keeps its own allocator (it aborts under a preloaded one).
MIMALLOC = $$(ls "$(abspath $(VENV))"/lib/python3*/site-packages/cmeel.prefix/lib/libmimalloc.so 2>/dev/null | head -n 1)

env: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
	@test -x $(PY) || { echo "Creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt -c constraints.txt
	$(PY) -m pip install --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --no-deps -e .
	lib=$(MIMALLOC); $(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" \
	    $${lib:+--env LD_PRELOAD "$$lib"}
	@touch $@

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks/00_setup.ipynb $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# One thread per process: the workers (one per core) run notebooks side by side, and
# oversubscribed threads make small recurrent steps many times slower. Headless Agg plots:
# under papermill the inline backend can stall on a widget's figure.
test: $(STAMP)
	PYTHONHASHSEED=0 OMP_NUM_THREADS=1 MPLBACKEND=Agg $(PY) -m pytest -n $(JOBS) --durations=10 $(PYTEST_ARGS)

# The CPU set of benchmarks against reference implementations (see benchmarks/README.md).
bench: $(STAMP)
	LD_PRELOAD=$(MIMALLOC) PYTHONHASHSEED=0 OMP_NUM_THREADS=1 MPLBACKEND=Agg $(PY) -m benchmarks $(BENCH_ARGS)

# Every chapter with its lecture settings (GPU if present; SMOKE=1: the small test settings):
# executed HTML, reveal.js slides and run_times.md in build/lecture/.
lecture: $(STAMP)
	$(PY) -m coursekit lecture $(if $(filter 1,$(SMOKE)),--smoke) $(LECTURE_ARGS)

# Re-resolve constraints.txt from the current environment (after changing requirements.txt).
constraints: $(STAMP)
	@{ echo "# Full resolved environment (pip freeze of a Linux x86_64 install), regenerated with \`make constraints\`."; \
	   echo "# Used as:  pip install -r requirements.txt -c constraints.txt"; \
	   $(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(mnist[-_]dnn|jupyterlab[-_]rise|sphinx[-_]revealjs)==' | sed -E \
	     -e 's/\+cpu$$//' \
	     -e 's/^tensorflow_cpu==(.*)$$/tensorflow-cpu==\1; sys_platform == "linux" and platform_machine == "x86_64"\ntensorflow==\1; sys_platform != "linux" or platform_machine != "x86_64"/'; \
	 } > constraints.txt
	@echo "constraints.txt rewritten; review the diff."

clean:
	rm -rf build .pytest_cache
