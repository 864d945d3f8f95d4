# xsam_ros developer entry points (machines without ROS 2; on a robot use colcon, see README).
#
#   make demo    set up, then run the main job on the embedded default model
#   make test    set up, then run the tests
#   make setup   create/refresh .venv: pinned Python packages, ROS 2 wheels, messages
#
# Knobs (environment or make variables): PYTHON, VENV, TORCH_INDEX_URL, XSAM_FORCE,
# PYTEST_ARGS, DEMO_ARGS. See scripts/setup_env.sh.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

export VENV
ifdef PYTHON
export PYTHON
endif
ifdef TORCH_INDEX_URL
export TORCH_INDEX_URL
endif
ifdef XSAM_FORCE
export XSAM_FORCE
endif

.PHONY: help setup test demo msgs lock clean

help:
	@echo "make demo   - set up (if needed) and run tools/demo.py on the default model"
	@echo "make test   - set up (if needed) and run the tests (pytest)"
	@echo "make setup  - create/refresh $(VENV): Python packages, ROS 2 wheels, xsam_ros messages"
	@echo "make msgs   - rebuild and reinstall the xsam_ros messages"
	@echo "make lock   - rewrite requirements/lock.txt from $(VENV)"
	@echo "make clean  - remove the CMake build directory (build/)"

setup:
	@scripts/setup_env.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

msgs:
	@XSAM_FORCE=1 scripts/setup_env.sh

lock:
	@scripts/setup_env.sh lock

clean:
	rm -rf build
