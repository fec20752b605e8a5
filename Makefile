# The two commands of the quick start; each sets itself up on a fresh machine:
#   make train   venv + install + CIFAR-10 download + the default 24-epoch training (--amp)
#   make test    venv + install with every extra (FFCV, DALI, dev) + lint + tests + benchmark smoke
# Extra flags reach the trainer through ARGS, e.g. make train ARGS="--epochs 2 --train-subset 2048"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torchvision is needed by the benchmarks' reference pipeline only; this pair installs together.
TORCH ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# FFCV compiles against these at install time (and loads opencv/turbojpeg at run time).
SYSTEM_PACKAGES := libopencv-dev libturbojpeg0-dev pkg-config g++

.PHONY: train test benchmark lint system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core-installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e .
	touch $@

# ffcv 1.0.2 is source-only and its setup.py names a license file that does not exist
# ('LICENSE.txt'); setuptools >= 77 warns that this becomes a build error on 2027-02-18, so its
# build gets setuptools < 77. Only the build: torch itself needs setuptools >= 77 at run time.
# (--build-constraint exists from pip 25.3 on.)
$(VENV)/.all-installed: $(VENV)/.core-installed
	$(MAKE) system-packages
	$(BIN)/python -m pip install -q 'pip>=25.3'
	echo 'setuptools<77' > $(VENV)/build-constraints.txt
	$(BIN)/pip install --build-constraint $(VENV)/build-constraints.txt -e '.[dev,ffcv,dali]'
	touch $@

system-packages:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null || { echo "error: FFCV needs $(SYSTEM_PACKAGES); install them with your package manager" >&2; exit 2; }; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }

train: $(VENV)/.core-installed
	$(BIN)/python -m fastcifar.train --amp $(ARGS)

lint: $(VENV)/.all-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest benchmarks

benchmark: $(VENV)/.all-installed
	$(BIN)/python -m pytest benchmarks --benchmark
