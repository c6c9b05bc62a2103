# SPDX-License-Identifier: BSD-3-Clause
# ferry: set-up, build and test in one command each (README quick start).
#   make demo    install what is missing, build, run the seed sample
#   make test    install what is missing, build, bring up Slurm (make slurm), run the whole suite
#   make slurm   as root: install slurm-wlm and munge, bring up a one-node cluster (.ci/slurm-up)
#   make asan    the suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan    the suite under ThreadSanitizer
#   make fuzz    build the libFuzzer targets (clang) and run each for FUZZ_SECONDS
#   make bench   ferry-bench beside loky, the MPI backend beside mpi4py.futures (writes docs/benchmarks.md); prints containment and tracing off vs on
#   make report-picture TRACE=FILE   docs/report.png: `ferry report` of FILE, shot in headless Chromium
#   make ci      what .ci/run runs: test, asan, fuzz
# Variables: PRESET (default: default), JOBS (default: 2), FUZZ_SECONDS (default: 60).

PRESET ?= default
JOBS ?= 2
FUZZ_SECONDS ?= 60
BUILD_DIR := build/$(PRESET)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages ferry builds and tests with.
DEPS := cmake make g++ libboost-dev libcereal-dev libcli11-dev doctest-dev ccache pkg-config zlib1g-dev \
        libdw-dev \
        libsodium-dev libseccomp-dev libopenmpi-dev openmpi-bin
# Only `make fuzz` needs clang's libFuzzer; only `make bench` needs loky (vendored in joblib) and mpi4py.
FUZZ_DEPS := clang libclang-rt-14-dev
BENCH_DEPS := python3-joblib python3-mpi4py
# The Slurm tests' cluster (tests/test_slurm.cpp): Debian's Slurm and its authentication daemon.
SLURM_DEPS := slurm-wlm munge
# The report's browser test (tests/test_report.cpp opens the page in headless Chromium), which
# every suite runs, and `make report-picture`.
REPORT_DEPS := chromium
# The benchmark always uses the optimised preset, and Debian's Python (the one python3-joblib and
# python3-mpi4py serve).
BENCH_PRESET := default
BENCH_PYTHON := /usr/bin/python3

# $(call install,packages): apt-get install those that are missing (idempotent; sudo when not root).
define install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "Installed: $(1)"; fi
endef

# $(call suite,preset): configure, build and run the whole suite with that preset.
define suite
	cmake --preset $(1)
	cmake --build --preset $(1) -j $(JOBS)
	ctest --preset $(1) -j $(JOBS)
endef

.PHONY: deps fuzz-deps bench-deps slurm-deps report-deps slurm configure build demo test asan tsan fuzz bench \
        report-picture ci clean

deps:
	$(call install,$(DEPS))

fuzz-deps: deps
	$(call install,$(FUZZ_DEPS))

bench-deps: deps
	$(call install,$(BENCH_DEPS))

slurm-deps:
	$(call install,$(SLURM_DEPS))

report-deps:
	$(call install,$(REPORT_DEPS))

# Installs Slurm and brings the cluster up when root (or with passwordless sudo); does nothing when
# it already runs. build/slurm-required says whether the Slurm tests must run (1: the cluster
# answers, so `make test` sets FERRY_REQUIRE_SLURM=1 and a test that cannot reach it fails) or may
# skip (0: no privileges to bring it up here). A failed set-up as root fails the build.
slurm: deps
	@mkdir -p build
	@if [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then $(MAKE) --no-print-directory slurm-deps; \
	else echo "slurm: not root and no passwordless sudo: not installing $(SLURM_DEPS)"; fi
	@rc=0; bash .ci/slurm-up || rc=$$?; \
	case $$rc in 0) echo 1 > build/slurm-required ;; 3) echo 0 > build/slurm-required ;; *) exit $$rc ;; esac

configure: deps
	cmake --preset $(PRESET)

build: configure
	cmake --build --preset $(PRESET) -j $(JOBS)

demo: build
	./$(BUILD_DIR)/bin/cloudpickle_wrapper

test: build slurm report-deps
	FERRY_REQUIRE_SLURM=$$(cat build/slurm-required) ctest --preset $(PRESET) -j $(JOBS)

asan: deps report-deps
	$(call suite,asan)

tsan: deps report-deps
	$(call suite,tsan)

# Each fuzzer grows a scratch corpus in build/fuzz/corpus from the seeds in tests/data/fuzz/<target>
# (plus the malformed-frame regression files, the built plugins and the sample traces of
# tests/data/trace); an input that crashes it is
# saved as tests/data/fuzz/<target>/crash-*, where the test suite replays it from then on.
fuzz: fuzz-deps
	cmake --preset fuzz
	cmake --build --preset fuzz -j $(JOBS) --target fuzz_frames fuzz_elf fuzz_json fuzz_trace fuzz_results \
	  ferry_plugin_math ferry_plugin_crash
	@rm -rf build/fuzz/seeds && mkdir -p build/fuzz/seeds/elf build/fuzz/corpus/frames build/fuzz/corpus/elf \
	  build/fuzz/corpus/json build/fuzz/corpus/trace build/fuzz/corpus/results
	@for f in build/fuzz/plugins/*.so; do strip --strip-all -o build/fuzz/seeds/elf/$$(basename $$f) $$f; done
	build/fuzz/bin/fuzz_frames -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -rss_limit_mb=1024 \
	  -artifact_prefix=tests/data/fuzz/frames/crash- \
	  build/fuzz/corpus/frames tests/data/fuzz/frames tests/data/frames
	build/fuzz/bin/fuzz_elf -max_total_time=$(FUZZ_SECONDS) -max_len=131072 -rss_limit_mb=1024 \
	  -artifact_prefix=tests/data/fuzz/elf/crash- \
	  build/fuzz/corpus/elf tests/data/fuzz/elf build/fuzz/seeds/elf
	build/fuzz/bin/fuzz_json -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -rss_limit_mb=2048 \
	  -dict=tests/fuzz/json.dict -artifact_prefix=tests/data/fuzz/json/crash- \
	  build/fuzz/corpus/json tests/data/fuzz/json
	build/fuzz/bin/fuzz_trace -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
	  -dict=tests/fuzz/trace.dict -artifact_prefix=tests/data/fuzz/trace/crash- \
	  build/fuzz/corpus/trace tests/data/fuzz/trace tests/data/trace
	build/fuzz/bin/fuzz_results -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=1024 \
	  -malloc_limit_mb=64 -artifact_prefix=tests/data/fuzz/results/crash- \
	  build/fuzz/corpus/results tests/data/fuzz/results

bench: bench-deps
	cmake --preset $(BENCH_PRESET) -DFERRY_BUILD_BENCH=ON
	cmake --build --preset $(BENCH_PRESET) -j $(JOBS) --target ferry_bench ferry_mpi_bench ferry_mpi_pingpong
	$(BENCH_PYTHON) bench/compare.py build/$(BENCH_PRESET)/bin/ferry-bench
	@echo "containment off vs on (issue 12), tracing off vs on (issue 15), alternating rounds:"
	$(BENCH_PYTHON) bench/before_after.py build/$(BENCH_PRESET)/bin/ferry-bench \
	  "build/$(BENCH_PRESET)/bin/ferry-bench --contained" --rounds 3 --metric roundtrip_us_median \
	  --metric worker_spawn_ms --metric map_chunk1000_tasks_per_s
	$(BENCH_PYTHON) bench/before_after.py build/$(BENCH_PRESET)/bin/ferry-bench \
	  "build/$(BENCH_PRESET)/bin/ferry-bench --trace" --rounds 3 --metric roundtrip_us_median \
	  --metric map_chunk1000_tasks_per_s
	$(BENCH_PYTHON) bench/mpi_compare.py --build build/$(BENCH_PRESET) --ranks --python $(BENCH_PYTHON)

# The README's picture of the report, from a trace of a real run (docs/report-picture.sh).
ifneq ($(filter report-picture,$(MAKECMDGOALS)),)
ifeq ($(TRACE),)
$(error usage: make report-picture TRACE=FILE, FILE a trace of a real run (ferry map --trace FILE ...))
endif
endif
report-picture: build report-deps
	sh docs/report-picture.sh $(TRACE) $(BUILD_DIR)/bin/ferry docs/report.png

ci: test asan fuzz

clean:
	rm -rf build
