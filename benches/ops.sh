#!/usr/bin/env bash
# What each kind of work switchyard asks of Envoy costs Envoy's CPU per request.
#
# Runs Envoy (one worker, pinned to CPU 0) with benches/ops-filter: the floor filter plus the
# operations named in its configuration (see benches/ops-filter/src/lib.rs), one operation per
# run, under the same closed-loop wrk load (16 connections, the 2 KB chat completion of the
# end-to-end benchmark, wrk and the mock on CPU 1). Each variant, the bare floor and Envoy alone
# are measured --rounds times, interleaved; the table gives the median CPU µs per request and the
# difference to the floor's median. Differences of a few µs are within run-to-run noise: compare
# them with the spread of the floor's own rounds, printed with it. Several operations joined by
# commas make one variant; the variant `switchyard` runs switchyard itself instead, with the
# end-to-end benchmark's configuration (benches/e2e/filter-switchyard.yaml), to compare with them.
#
# --connections N and --pace MS change the load: N connections, each waiting MS milliseconds after
# each answer (--connections 4 --pace 100: about 40 requests/s, the end-to-end benchmark's low
# rate, where the proxy's core is mostly idle and each request finds its caches cold). The table
# then also gives the median p50 latency of each variant.
#
# usage: benches/ops.sh [--rounds N] [--duration S] [--connections N] [--pace MS] [VARIANT...]
# Needs .venv/bin/envoy (make envoy), target/release/mock-upstream (make mock), the ops filter and
# switchyard.wasm (make bench-ops builds them), wrk, taskset, curl, python3. Binds 127.0.0.1 only;
# stops everything it started when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
E2E=benches/e2e
# shellcheck source=e2e/lib.sh
source "$E2E/lib.sh"
ROUNDS=3 DURATION=6 WARMUP=2 CONNECTIONS=16 PACE_MS=0
die() { echo "ops.sh: error: $*" >&2; exit 1; }
OPERATIONS=()
while (($#)); do
	case "$1" in
	--rounds) ROUNDS=$2; shift ;;
	--duration) DURATION=$2; shift ;;
	--connections) CONNECTIONS=$2; shift ;;
	--pace) PACE_MS=$2; shift ;;
	-h | --help) sed -n '2,24p' "$0"; exit 0 ;;
	*) OPERATIONS+=("$1") ;;
	esac
	shift
done
((${#OPERATIONS[@]})) || OPERATIONS=(clock20 counters10 histograms4 request_headers response_headers
	rewrite_response_headers set_headers8 add_headers8 rewrite_body hold_answer shared_data filter_state compute)

ENVOY=.venv/bin/envoy
MOCK=target/release/mock-upstream
OPS_WASM=target/wasm32-wasip1/release/switchyard_ops.wasm
SWITCHYARD_WASM=target/wasm32-wasip1/release/switchyard.wasm
for file in "$ENVOY" "$MOCK" "$OPS_WASM" "$SWITCHYARD_WASM"; do
	[[ -e $file ]] || { echo "missing $file (make bench-ops builds what it needs)" >&2; exit 1; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-ops.XXXXXX")
cp "$OPS_WASM" "$WORK/ops.wasm"
cp "$SWITCHYARD_WASM" "$WORK/switchyard.wasm"
OPS_WASM=$WORK/ops.wasm
SWITCHYARD_WASM=$WORK/switchyard.wasm
PIDS=()
trap stop_started EXIT
trap 'exit 130' INT TERM

start_mock_on 1
read -r LISTEN_PORT ADMIN_PORT <<<"$(free_ports 2)"

# Envoy's config for one variant: "plain" (no wasm filter), "floor" (no operation), "switchyard"
# or operations.
render() {
	local snippet=$E2E/filter-ops.yaml
	OPS=$1
	case "$1" in
	plain) snippet=/dev/null ;;
	floor) OPS= ;;
	switchyard) snippet=$E2E/filter-switchyard.yaml ;;
	esac
	render_envoy_yaml "$snippet" "$WORK/envoy.yaml" "$LISTEN_PORT" "$ADMIN_PORT"
}

load() {
	BODY_FILE=$ROOT/$E2E/chat-2k.json PACE_MS=$2 taskset -c 1 wrk -t1 -c"$3" -d"$1s" -s "$E2E/post.lua" \
		"http://127.0.0.1:$LISTEN_PORT/v1/chat/completions"
}

RESULTS=$WORK/results.tsv
measure() {
	local variant=$1 round=$2 envoy t0 t1 out requests errors p50
	render "$variant"
	taskset -c 0 "$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 --disable-hot-restart -l warn \
		>"$WORK/envoy.log" 2>&1 &
	envoy=$!
	PIDS+=("$envoy")
	wait_http "http://127.0.0.1:$ADMIN_PORT/ready" "$envoy" 30 envoy
	load "$WARMUP" 0 16 >/dev/null
	curl -sf -o /dev/null -X POST "http://127.0.0.1:$MOCK_PORT/_mock/clear"
	t0=$(cpu_ticks "$envoy")
	out=$(load "$DURATION" "$PACE_MS" "$CONNECTIONS")
	t1=$(cpu_ticks "$envoy")
	kill "$envoy"
	wait "$envoy" 2>/dev/null || true
	requests=$(sed -nE 's/^RESULT .*requests=([0-9]+).*/\1/p' <<<"$out")
	errors=$(sed -nE 's/^RESULT .*status_errors=([0-9]+).*/\1/p' <<<"$out")
	p50=$(sed -nE 's/^RESULT .* p50_us=([0-9]+).*/\1/p' <<<"$out")
	[[ -n $requests && $requests -gt 0 && $errors == 0 ]] || { echo "$variant: $out" >&2; exit 1; }
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$round" "$requests" $((t1 - t0)) "$CLK_TCK" "$p50" >>"$RESULTS"
	printf '[ops] round %s %-26s %7d requests  %6.1f µs CPU/request  p50 %5d µs\n' "$round" "$variant" "$requests" \
		"$(awk -v t=$((t1 - t0)) -v n="$requests" -v hz="$CLK_TCK" 'BEGIN { print t / hz * 1e6 / n }')" "$p50" >&2
}

for round in $(seq 1 "$ROUNDS"); do
	for variant in plain floor "${OPERATIONS[@]}"; do
		measure "$variant" "$round"
	done
done

python3 - "$RESULTS" "$PACE_MS" <<'PY'
import statistics, sys
cpu, p50 = {}, {}
for line in open(sys.argv[1]):
    variant, _, requests, ticks, hz, latency = line.rstrip("\n").split("\t")
    cpu.setdefault(variant, []).append(int(ticks) / int(hz) * 1e6 / int(requests))
    p50.setdefault(variant, []).append(int(latency))
paced = int(sys.argv[2]) > 0
floor = statistics.median(cpu["floor"])
floor_p50 = statistics.median(p50["floor"])
head = "| variant | CPU µs/request (median) | rounds (min–max) | vs floor |"
rule = "|---|--:|--:|--:|"
if paced:
    head += " p50 µs (median) | rounds (min–max) | vs floor |"
    rule += "--:|--:|--:|"
print(head)
print(rule)
for variant, values in cpu.items():
    med = statistics.median(values)
    delta = "–" if variant in ("plain", "floor") else f"{med - floor:+.1f}"
    line = f"| {variant} | {med:.1f} | {min(values):.1f}–{max(values):.1f} | {delta} |"
    if paced:
        lat = p50[variant]
        med = statistics.median(lat)
        delta = "–" if variant in ("plain", "floor") else f"{med - floor_p50:+.0f}"
        line += f" {med:.0f} | {min(lat)}–{max(lat)} | {delta} |"
    print(line)
PY
