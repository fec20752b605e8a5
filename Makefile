# The two commands of the quick start; each sets itself up on a fresh machine:
#   make train   venv + install + CIFAR-10 download + the 24-epoch training (mixed precision
#                where the device runs it natively)
#   make test    venv + install with every extra (FFCV, DALI, Grad-CAM, TensorBoard, dev) +
#                lint + tests + benchmark smoke run; each phase prints its wall time
# Extra flags reach the trainer through ARGS, e.g. make train ARGS="--epochs 2 --train-subset 2048"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torchvision is needed by the benchmarks' reference pipeline and grad-cam only; this pair
# installs together.
TORCH ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# FFCV compiles against these at install time (and loads opencv/turbojpeg at run time).
SYSTEM_PACKAGES := libopencv-dev libturbojpeg0-dev pkg-config g++
EXTRAS := dev,ffcv,dali,gradcam,tensorboard,export

# $(call timed,NAME,COMMAND): run COMMAND, then print how long phase NAME took.
timed = @start=$$(date +%s); echo "== $(1)"; $(2); status=$$?; \
	echo "== $(1): $$(( $$(date +%s) - start )) s"; exit $$status

.PHONY: train test unit-tests benchmark-smoke benchmark lint system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core-installed: $(BIN)/python setup.cfg pyproject.toml
	$(call timed,python packages (core),$(BIN)/pip install -q $(TORCH) && $(BIN)/pip install -q -e .)
	touch $@

# ffcv 1.0.2 is source-only and its setup.py names a license file that does not exist
# ('LICENSE.txt'); setuptools >= 77 warns that this becomes a build error on 2027-02-18, so its
# build gets setuptools < 77. Only the build: torch itself needs setuptools >= 77 at run time.
# (--build-constraint exists from pip 25.3 on.)
$(VENV)/.all-installed: $(VENV)/.core-installed
	$(MAKE) --no-print-directory system-packages
	$(call timed,python packages (extras),$(BIN)/python -m pip install -q 'pip>=25.3' && \
	  echo 'setuptools<77' > $(VENV)/build-constraints.txt && \
	  $(BIN)/pip install -q --build-constraint $(VENV)/build-constraints.txt -e '.[$(EXTRAS)]' $(TORCH))
	touch $@

# apt's own progress lines are kept out of the output (in $(VENV)/apt.log), unless it fails.
system-packages:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
	  echo "== system packages: $(SYSTEM_PACKAGES) already installed"; \
	else \
	  command -v apt-get >/dev/null || { echo "error: FFCV needs $(SYSTEM_PACKAGES); install them with your package manager" >&2; exit 2; }; \
	  start=$$(date +%s); echo "== system packages: $(SYSTEM_PACKAGES)"; mkdir -p $(VENV); \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends $(SYSTEM_PACKAGES); } > $(VENV)/apt.log 2>&1 \
	    || { cat $(VENV)/apt.log >&2; exit 2; }; \
	  echo "== system packages: $$(( $$(date +%s) - start )) s"; \
	fi

train: $(VENV)/.core-installed
	$(BIN)/python -m fastcifar.train $(ARGS)

lint: $(VENV)/.all-installed
	$(call timed,lint,$(BIN)/ruff check . && $(BIN)/ruff format --check .)

# Both suites run on TEST_WORKERS pytest-xdist processes of one thread each (tests/workers.py),
# a file to a worker (module fixtures are built once): on CI's 2 cores this keeps the second
# core busy through imports and process starts (timings in CONTRIBUTING.md).
# TEST_WORKERS=0 runs each suite in one process.
unit-tests: $(VENV)/.all-installed
	$(call timed,tests,$(BIN)/python -m pytest tests $(XDIST) --durations=20)

benchmark-smoke: $(VENV)/.all-installed
	$(call timed,benchmark smoke,$(BIN)/python -m pytest benchmarks $(XDIST))

test: lint unit-tests benchmark-smoke

benchmark: $(VENV)/.all-installed
	$(BIN)/python -m pytest benchmarks --benchmark
