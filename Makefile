# SPDX-License-Identifier: BSD-3-Clause
# ferry: set-up, build and test in one command each (README quick start).
#   make demo    install what is missing, build, run the seed sample
#   make test    install what is missing, build, run the whole suite through ctest
#   make bench   build ferry-bench and compare with loky (docs/benchmarks.md)
# Variables: PRESET (default: default), JOBS (default: 2).

PRESET ?= default
JOBS ?= 2
BUILD_DIR := build/$(PRESET)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages ferry builds and tests with.
DEPS := cmake make g++ libboost-dev libcereal-dev libcli11-dev doctest-dev ccache
MISSING = $(shell for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done)
# Only `make bench` needs these: loky (vendored in joblib) for the side-by-side comparison.
BENCH_DEPS := python3-joblib
BENCH_MISSING = $(shell for p in $(BENCH_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done)
# The benchmark always uses the optimised preset, and Debian's Python (the one python3-joblib serves).
BENCH_PRESET := default
BENCH_PYTHON := /usr/bin/python3

.PHONY: deps bench-deps configure build demo test bench clean

deps:
	@missing="$(MISSING)"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "All dependencies are installed."; fi

bench-deps:
	@missing="$(BENCH_MISSING)"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "All benchmark dependencies are installed."; fi

configure: deps
	cmake --preset $(PRESET)

build: configure
	cmake --build --preset $(PRESET) -j $(JOBS)

demo: build
	./$(BUILD_DIR)/bin/cloudpickle_wrapper

test: build
	ctest --preset $(PRESET) -j $(JOBS)

bench: deps bench-deps
	cmake --preset $(BENCH_PRESET) -DFERRY_BUILD_BENCH=ON
	cmake --build --preset $(BENCH_PRESET) -j $(JOBS) --target ferry_bench
	$(BENCH_PYTHON) bench/compare.py build/$(BENCH_PRESET)/bin/ferry-bench

clean:
	rm -rf build
