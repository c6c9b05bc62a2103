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

.PHONY: deps configure build demo test bench clean

deps:
	@missing="$(MISSING)"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "All dependencies are installed."; fi

configure: deps
	cmake --preset $(PRESET)

build: configure
	cmake --build --preset $(PRESET) -j $(JOBS)

demo: build
	./$(BUILD_DIR)/bin/cloudpickle_wrapper

test: build
	ctest --preset $(PRESET) -j $(JOBS)

clean:
	rm -rf build
