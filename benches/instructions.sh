#!/usr/bin/env bash
# x86 instructions per whole 2 KB request lifecycle in the wasmtime harness (the work of
# `wasm/request_2k_non_streaming_whole_lifecycle`), for switchyard and the minimal filter, counted
# by valgrind's callgrind: unlike the criterion timings, the count does not move with what else the
# machine does, so two builds can be compared on a busy machine.
#
# Each module runs benches/examples/lifecycles.rs under callgrind twice, with SMALL and LARGE
# lifecycles; everything else the program does (starting, loading the compiled module, configuring
# the VM) is the same in both, so (count(LARGE) - count(SMALL)) / (LARGE - SMALL) is the count of
# one lifecycle: host side (the harness's hostcalls, standing in for Envoy's) and module side both.
#
# usage: benches/instructions.sh [--small N] [--large N]      (make bench-instructions)
# Needs valgrind, switchyard.wasm (make wasm) and the floor filter (make bench-wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL=200 LARGE=1200
while (($#)); do
	case "$1" in
	--small) SMALL=$2; shift ;;
	--large) LARGE=$2; shift ;;
	-h | --help) sed -n '2,13p' "$0"; exit 0 ;;
	*) echo "instructions.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
((LARGE > SMALL)) || { echo "instructions.sh: --large must be above --small" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 1; }
cargo build --quiet --release -p switchyard-benches --example lifecycles
BIN=target/release/examples/lifecycles

# Instructions the program ran with N lifecycles of MODULE.
count() {
	valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>&1 |
		sed -nE 's/^==[0-9]+== Collected : ([0-9]+)$/\1/p'
}

echo "| module | instructions per 2 KB lifecycle | runs: $SMALL and $LARGE lifecycles |"
echo "|---|--:|--:|"
for module in switchyard floor; do
	"$BIN" "$module" 1 # compiles the module once, so both counted runs load it from the cache
	small=$(count "$module" "$SMALL")
	large=$(count "$module" "$LARGE")
	[[ -n $small && -n $large ]] || { echo "instructions.sh: callgrind gave no count for $module" >&2; exit 1; }
	echo "| $module | $(((large - small) / (LARGE - SMALL))) | $small and $large |"
done
