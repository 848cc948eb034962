#!/usr/bin/env bash
# End-to-end benchmark: what a proxy costs per LLM request, side by side, in one run on one machine.
#
#   1. Envoy alone          same listener, routes and clusters, no HTTP filter but the router
#   2. Envoy + floor        benches/floor-filter: buffers the body, copies it into the VM, sets the
#                           route header (the floor for any body-inspecting wasm filter)
#   3. Envoy + switchyard   target/wasm32-wasip1/release/switchyard.wasm, realistic configuration
#   4. LiteLLM proxy        the closest equivalent configuration (benches/e2e/litellm.yaml.in)
#
# All four forward to the same mock OpenAI upstream (target/release/mock-upstream, answering at once)
# and are loaded by the same wrk (benches/e2e/post.lua) with the same bodies: a 2 KB chat completion
# (benches/e2e/chat-2k.json) and the same body streamed (chat-2k-stream.json), measured separately.
# Envoy runs with --concurrency 1 and LiteLLM with one worker; the proxy is pinned to one core and
# wrk + mock to the other (taskset). Per proxy and body:
#   - throughput: closed loop, --connections connections, --duration seconds;
#   - latency at fixed moderate rates (paced: each connection waits between requests), a low rate
#     every proxy sustains and, for the Envoy rows, a high rate;
#   - latency at one connection, back to back;
#   - CPU time of the proxy's processes (utime + stime from /proc/PID/stat) per completed request.
# The Envoy rows are measured --rounds times, interleaved (each round in another order), and the
# report gives medians (and the range of throughput and CPU); LiteLLM, 100 times slower, once.
# Then rows 1-3 run at once and their low-rate latency is measured side by side (--rounds runs of
# three paced wrk at the same time, --side-duration seconds each), so that the machine's other
# work falls on every row alike.
# When allowed (root), the proxy, wrk and the mock run at nice -10, so that other work on the
# machine disturbs them less.
# The tables (ratios to rows 1 and 2) go to stdout and --out (markdown), raw figures to --out's
# .tsv sibling.
#
# --smoke runs only the Envoy rows, a few requests and ~2 s of load each, checking every answer is
# 200 and routed by the route header (LiteLLM skipped); it writes nothing under benches/results/.
#
# Needs: .venv/bin/envoy (make envoy), target/release/mock-upstream (make mock), switchyard.wasm
# (make wasm), switchyard_floor.wasm (make bench-wasm), wrk, taskset, curl, python3; for row 4,
# .venv-litellm/bin/litellm. `make bench-e2e` / `make bench-smoke` provide them.
# Everything binds 127.0.0.1 and is stopped when the script exits.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
E2E=benches/e2e
# shellcheck source=e2e/lib.sh
source "$E2E/lib.sh"

usage() {
	cat <<'EOF'
usage: benches/e2e.sh [--smoke] [--rounds N] [--duration S] [--warmup S] [--connections N]
                      [--low-rate R] [--high-rate R] [--no-litellm] [--no-side] [--side-duration S]
                      [--out FILE] [--keep]
  --smoke          Envoy rows only, ~2 s each, checks answers (nothing written to benches/results)
  --rounds N       measurements of each Envoy row, interleaved; the report gives medians (default 3)
  --duration S     seconds per measurement (default 8)
  --warmup S       seconds of load before measuring each proxy and body (default 4)
  --connections N  connections of the throughput run (default 16; the mock is a thread per connection)
  --low-rate R     requests/s of the paced run every proxy gets (default 40)
  --high-rate R    requests/s of the paced run the Envoy rows get (default 1000)
  --no-litellm     leave out row 4
  --no-side        leave out the low-rate latency of rows 1-3 measured side by side
  --side-duration S  seconds of each side-by-side run (default 15; there are --rounds of them per body)
  --out FILE       markdown report (default benches/results/e2e.md; raw figures beside it, .tsv)
  --keep           keep the working directory (configs, logs) instead of removing it
EOF
}

SMOKE=0
ROUNDS=3
DURATION=8
WARMUP=4
CONNS=16
LOW_RATE=40
HIGH_RATE=1000
LITELLM_ROW=1
SIDE=1
SIDE_DURATION=15
OUT=benches/results/e2e.md
KEEP=0
COMMAND_LINE="benches/e2e.sh${*:+ $*}"
while (($#)); do
	case "$1" in
	--smoke) SMOKE=1 ;;
	--rounds) ROUNDS=$2; shift ;;
	--duration) DURATION=$2; shift ;;
	--warmup) WARMUP=$2; shift ;;
	--connections) CONNS=$2; shift ;;
	--low-rate) LOW_RATE=$2; shift ;;
	--high-rate) HIGH_RATE=$2; shift ;;
	--no-litellm) LITELLM_ROW=0 ;;
	--no-side) SIDE=0 ;;
	--side-duration) SIDE_DURATION=$2; shift ;;
	--out) OUT=$2; shift ;;
	--keep) KEEP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "e2e.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

ENVOY=.venv/bin/envoy
LITELLM=.venv-litellm/bin/litellm
MOCK=target/release/mock-upstream
SWITCHYARD_WASM=$ROOT/target/wasm32-wasip1/release/switchyard.wasm
FLOOR_WASM=$ROOT/target/wasm32-wasip1/release/switchyard_floor.wasm
CHAT_BODY=$ROOT/$E2E/chat-2k.json
STREAM_BODY=$ROOT/$E2E/chat-2k-stream.json
PATH_V1=/v1/chat/completions
# The proxy gets CPU 0; wrk and the mock share CPU 1.
PROXY_CPU=0
LOAD_CPU=1
# Higher priority for the benchmark's own processes when allowed.
PRIORITY=()
if [[ $(nice -n -10 nice 2>/dev/null) == -10 ]]; then
	PRIORITY=(nice -n -10)
fi

log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

missing=()
for tool in wrk taskset curl python3; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
for file in "$ENVOY" "$MOCK" "$SWITCHYARD_WASM" "$FLOOR_WASM"; do
	[[ -e $file ]] || missing+=("$file")
done
if ((!SMOKE && LITELLM_ROW)) && [[ ! -x $LITELLM ]]; then
	missing+=("$LITELLM")
fi
((${#missing[@]} == 0)) || die "missing: ${missing[*]} (make bench-e2e installs and builds them)"
(($(nproc) >= 2)) || die "needs 2 cores (the proxy on one, wrk and the mock on the other)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-e2e.XXXXXX")
# Every round loads the same modules, even if target/ is rebuilt meanwhile.
cp "$SWITCHYARD_WASM" "$WORK/switchyard.wasm"
cp "$FLOOR_WASM" "$WORK/switchyard_floor.wasm"
SWITCHYARD_WASM=$WORK/switchyard.wasm
FLOOR_WASM=$WORK/switchyard_floor.wasm
RAW=$WORK/results.tsv
PIDS=()

stop_tree() {
	local pid=$1 tree i
	kill -0 "$pid" 2>/dev/null || return 0
	tree="$pid $(descendants "$pid" | tr '\n' ' ')"
	# shellcheck disable=SC2086
	kill -TERM $tree 2>/dev/null || true
	for i in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	# shellcheck disable=SC2086
	kill -KILL $tree 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		stop_tree "$pid"
	done
	if ((KEEP)); then
		log "working directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts "$@" in the background on CPU $1 (output to $WORK/$2.log); sets STARTED_PID.
start_on_cpu() {
	local cpu=$1 name=$2
	shift 2
	"${PRIORITY[@]}" taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
	STARTED_PID=$!
	PIDS+=("$STARTED_PID")
}

# Busy clock ticks of one CPU (user nice system irq softirq steal) from /proc/stat.
cpu_busy_ticks() {
	awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

MOCK_PORT= MOCK_PID=
start_mock() {
	read -r MOCK_PORT <<<"$(free_ports 1)"
	start_on_cpu "$LOAD_CPU" mock "$MOCK" --listen "mock=127.0.0.1:$MOCK_PORT"
	MOCK_PID=$STARTED_PID
	wait_http "http://127.0.0.1:$MOCK_PORT/_mock/hits" "$MOCK_PID" 10 mock
	# Forget any default behavior or queued knob: every answer is immediate and healthy.
	curl -sf -o /dev/null -X POST "http://127.0.0.1:$MOCK_PORT/_mock/reset"
}

# The mock records every request: forget them between runs so its memory stays flat.
mock_clear() {
	curl -sf -o /dev/null -X POST "http://127.0.0.1:$MOCK_PORT/_mock/clear" || true
}

# Renders the Envoy config of ROW (plain | floor | switchyard) to $WORK/envoy-ROW.yaml.
render_envoy() {
	local row=$1 listen=$2 admin=$3 snippet=/dev/null
	case "$row" in
	floor) snippet=$E2E/filter-floor.yaml ;;
	switchyard) snippet=$E2E/filter-switchyard.yaml ;;
	esac
	render_envoy_yaml "$snippet" "$WORK/envoy-$row.yaml" "$listen" "$admin"
}

PROXY_PID= PROXY_URL= ADMIN_URL=
start_envoy() {
	local row=$1 listen admin
	read -r listen admin <<<"$(free_ports 2)"
	render_envoy "$row" "$listen" "$admin"
	start_on_cpu "$PROXY_CPU" "envoy-$row" "$ENVOY" -c "$WORK/envoy-$row.yaml" --concurrency 1 \
		--disable-hot-restart -l warn
	PROXY_PID=$STARTED_PID
	PROXY_URL="http://127.0.0.1:$listen"
	ADMIN_URL="http://127.0.0.1:$admin"
	wait_http "$ADMIN_URL/ready" "$PROXY_PID" 30 "envoy-$row"
}

start_litellm() {
	local port
	read -r port <<<"$(free_ports 1)"
	sed -e "s|@MOCK_PORT@|$MOCK_PORT|g" "$E2E/litellm.yaml.in" >"$WORK/litellm.yaml"
	# No master key (fine on loopback), no network look-up of the model price map, errors only.
	start_on_cpu "$PROXY_CPU" litellm env LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true \
		LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
		"$LITELLM" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$port" --num_workers 1
	PROXY_PID=$STARTED_PID
	PROXY_URL="http://127.0.0.1:$port"
	ADMIN_URL=
	wait_http "$PROXY_URL/health/liveliness" "$PROXY_PID" 120 litellm
}

stop_proxy() {
	stop_tree "$PROXY_PID"
	local kept=()
	for pid in "${PIDS[@]}"; do
		[[ $pid == "$PROXY_PID" ]] || kept+=("$pid")
	done
	PIDS=("${kept[@]}")
}

# Requests per upstream cluster, from Envoy's stats: "provider_a=N provider_c=M".
routed_counts() {
	curl -sf "$ADMIN_URL/stats?filter=%5Ecluster%5C.provider_.%5C.upstream_rq_completed%24" |
		sed -E 's/^cluster\.(provider_.)\.upstream_rq_completed: ([0-9]+)$/\1=\2/' | tr '\n' ' '
}

# One answer through the proxy: checks the status is 200 and the body looks right.
check_answer() {
	local row=$1 mix=$2 body=$CHAT_BODY headers status
	[[ $mix == stream ]] && body=$STREAM_BODY
	headers=$WORK/check-$row-$mix.headers
	status=$(curl -s -o "$WORK/check-$row-$mix.body" -D "$headers" -w '%{http_code}' --max-time 30 \
		-H 'content-type: application/json' --data-binary "@$body" "$PROXY_URL$PATH_V1")
	[[ $status == 200 ]] || { cat "$headers" "$WORK/check-$row-$mix.body" >&2; die "$row/$mix answered $status"; }
	if [[ $mix == stream ]]; then
		grep -q 'data: \[DONE\]' "$WORK/check-$row-$mix.body" || die "$row/$mix: the stream has no [DONE]"
	else
		grep -q '"hello from mock as ' "$WORK/check-$row-$mix.body" || die "$row/$mix: not the mock's answer"
	fi
	if [[ $row == switchyard ]]; then
		grep -qi '^x-switchyard-category: general' "$headers" || die "switchyard/$mix: not classified as general"
		grep -qi '^x-switchyard-model: mistral-small-latest' "$headers" || die "switchyard/$mix: model not rewritten"
		if [[ $mix == chat ]]; then
			grep -qi '^x-switchyard-cost-usd: [0-9]' "$headers" || die "switchyard/$mix: answer not priced"
		fi
	fi
}

# Checks that the filter rows reached the mock through the route header's cluster (provider_c)
# and the plain row through the default route (provider_a).
check_routing() {
	local row=$1 counts
	counts=$(routed_counts)
	ROUTED="$counts"
	case "$row" in
	plain) [[ $counts =~ provider_a=[1-9] && $counts =~ provider_c=0 ]] ;;
	*) [[ $counts =~ provider_c=[1-9] && $counts =~ provider_a=0 ]] ;;
	esac || die "$row: unexpected routing ($counts)"
}

# Runs wrk against URL with the body of MIX; its output goes to $WORK/wrk-ROW-MIX-KIND.txt and
# its own CPU time (user system, seconds) to that file's .time sibling.
#   run_wrk ROW MIX KIND CONNECTIONS PACE_MS SECONDS URL
run_wrk() {
	local row=$1 mix=$2 kind=$3 conns=$4 pace=$5 seconds=$6 url=$7 body=$CHAT_BODY out
	[[ $mix == stream ]] && body=$STREAM_BODY
	out=$WORK/wrk-$row-$mix-$kind.txt
	{
		TIMEFORMAT='%U %S'
		time BODY_FILE=$body PACE_MS=$pace "${PRIORITY[@]}" taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${seconds}s" \
			--timeout 10s -s "$E2E/post.lua" "$url$PATH_V1" >"$out"
	} 2>"$out.time"
}

# The counters a run is measured by, read at one moment: the CPU ticks of the proxy PID (with its
# descendants) and of the mock, both cores' busy ticks, and the clock in ns.
#   readings PID
readings() {
	echo "$(cpu_ticks "$1") $(cpu_ticks "$MOCK_PID") $(cpu_busy_ticks "$PROXY_CPU") $(cpu_busy_ticks "$LOAD_CPU") $(date +%s%N)"
}

# Reads a finished run_wrk's output, appends a line to $RAW (unless KIND is warmup), logs a short
# summary and fails on any error. BEFORE and AFTER are the caller's `readings` of the proxy
# around the run.
#   record ROUND ROW MIX KIND CONNECTIONS PACE_MS BEFORE AFTER
record() {
	local round=$1 row=$2 mix=$3 kind=$4 conns=$5 pace=$6 p0 m0 b0 l0 t0 p1 m1 b1 l1 t1
	read -r p0 m0 b0 l0 t0 <<<"$7"
	read -r p1 m1 b1 l1 t1 <<<"$8"
	local out=$WORK/wrk-$row-$mix-$kind.txt wrk_cpu result
	wrk_cpu=$(tail -n1 "$out.time" | awk '{ printf "%.3f", $1 + $2 }')
	result=$(grep '^RESULT ' "$out") || { cat "$out" >&2; die "$row/$mix/$kind: wrk printed no result"; }
	# key=value pairs of the RESULT line, as shell variables r_KEY.
	local r_requests r_duration_us r_bytes r_errors r_status_errors r_timeouts r_p50_us r_p90_us \
		r_p99_us r_p999_us r_max_us r_mean_us kv
	for kv in ${result#RESULT }; do
		printf -v "r_${kv%%=*}" '%s' "${kv#*=}"
	done
	if [[ $kind != warmup ]]; then
		printf '%s\n' "$round	$row	$mix	$kind	$conns	$pace	$r_requests	$r_duration_us	$r_errors	$r_status_errors	$r_p50_us	$r_p90_us	$r_p99_us	$r_p999_us	$r_max_us	$r_mean_us	$((p1 - p0))	$((m1 - m0))	$wrk_cpu	$((b1 - b0))	$((l1 - l0))	$(((t1 - t0) / 1000))	$CLK_TCK" >>"$RAW"
	fi
	log "$(printf '%s %-10s %-6s %-6s c=%-2s pace=%-3sms: %6d requests %8.1f req/s  p50 %6.2f ms  p99 %7.2f ms  errors %d/%d  proxy CPU %4d ticks' \
		"$round" "$row" "$mix" "$kind" "$conns" "$pace" "$r_requests" \
		"$(awk -v n="$r_requests" -v d="$r_duration_us" 'BEGIN { print n / d * 1e6 }')" \
		"$(awk -v v="$r_p50_us" 'BEGIN { print v / 1000 }')" "$(awk -v v="$r_p99_us" 'BEGIN { print v / 1000 }')" \
		"$r_errors" "$r_status_errors" $((p1 - p0)))"
	((r_errors == 0 && r_status_errors == 0)) || die "$row/$mix/$kind: $r_errors socket errors, $r_status_errors error statuses"
	((r_requests > 0)) || die "$row/$mix/$kind: no request completed"
}

# One wrk run against the proxy started last ($PROXY_PID, $PROXY_URL).
#   measure ROUND ROW MIX KIND CONNECTIONS PACE_MS SECONDS
measure() {
	local round=$1 row=$2 mix=$3 kind=$4 conns=$5 pace=$6 seconds=$7 before
	mock_clear
	before=$(readings "$PROXY_PID")
	run_wrk "$row" "$mix" "$kind" "$conns" "$pace" "$seconds" "$PROXY_URL"
	record "$round" "$row" "$mix" "$kind" "$conns" "$pace" "$before" "$(readings "$PROXY_PID")"
}

# Connections and mean per-connection pause (ms) for a paced run at RATE requests/s: a pause long
# next to the latency (10 connections a second each, at most 16 connections), so the rate depends
# little on how fast the proxy answers.
pacing() {
	awk -v rate="$1" 'BEGIN {
		conns = int((rate + 9) / 10); if (conns < 1) conns = 1; if (conns > 16) conns = 16
		pace = int(conns * 1000 / rate + 0.5); if (pace < 1) pace = 1
		print conns, pace }'
}

run_row() {
	local round=$1 row=$2 mix conns pace
	log "--- $row (round $round) ---"
	case "$row" in
	litellm) start_litellm ;;
	*) start_envoy "$row" ;;
	esac
	for mix in chat stream; do
		check_answer "$row" "$mix"
	done
	if ((SMOKE)); then
		for mix in chat stream; do
			measure "$round" "$row" "$mix" smoke 2 0 1
		done
	else
		for mix in chat stream; do
			measure "$round" "$row" "$mix" warmup "$CONNS" 0 "$WARMUP"
			measure "$round" "$row" "$mix" max "$CONNS" 0 "$DURATION"
			read -r conns pace <<<"$(pacing "$LOW_RATE")"
			measure "$round" "$row" "$mix" low "$conns" "$pace" "$DURATION"
			if [[ $row != litellm ]]; then
				read -r conns pace <<<"$(pacing "$HIGH_RATE")"
				measure "$round" "$row" "$mix" high "$conns" "$pace" "$DURATION"
			fi
			measure "$round" "$row" "$mix" c1 1 0 "$DURATION"
		done
	fi
	if [[ $row != litellm ]]; then
		check_routing "$row"
		log "$row: routed $ROUTED"
	fi
	stop_proxy
}

# Latency of rows 1-3 at the low rate measured side by side: the three Envoys run at once (all on
# the proxy's core) and three wrk, paced as in the low-rate run, load them at the same time, so
# whatever else the machine does in those seconds falls on every row alike (in the interleaved
# rounds it can fall on one row's run only). Each answer takes the proxy's core for well under a
# millisecond and the pauses are random, so the rows seldom overlap.
declare -A SIDE_PID SIDE_URL SIDE_ADMIN
run_side() {
	local round=$1 mix=$2 seconds=$3 row conns pace wrk_pids=() pid
	local -A before after
	read -r conns pace <<<"$(pacing "$LOW_RATE")"
	mock_clear
	for row in "${ENVOY_ROWS[@]}"; do
		before[$row]=$(readings "${SIDE_PID[$row]}")
	done
	for row in "${ENVOY_ROWS[@]}"; do
		run_wrk "$row" "$mix" side "$conns" "$pace" "$seconds" "${SIDE_URL[$row]}" &
		wrk_pids+=($!)
	done
	for pid in "${wrk_pids[@]}"; do
		wait "$pid" || die "side by side/$mix: wrk failed"
	done
	for row in "${ENVOY_ROWS[@]}"; do
		after[$row]=$(readings "${SIDE_PID[$row]}")
	done
	for row in "${ENVOY_ROWS[@]}"; do
		record "$round" "$row" "$mix" side "$conns" "$pace" "${before[$row]}" "${after[$row]}"
	done
}

side_by_side() {
	local row mix round seconds=$SIDE_DURATION
	((SMOKE)) && seconds=1
	log "--- rows 1-3 side by side at $LOW_RATE req/s each ---"
	for row in "${ENVOY_ROWS[@]}"; do
		start_envoy "$row"
		SIDE_PID[$row]=$PROXY_PID
		SIDE_URL[$row]=$PROXY_URL
		SIDE_ADMIN[$row]=$ADMIN_URL
		for mix in chat stream; do
			check_answer "$row" "$mix"
			((SMOKE)) || measure 0 "$row" "$mix" warmup "$CONNS" 0 "$WARMUP"
		done
	done
	for round in $(seq 1 "$ROUNDS"); do
		for mix in chat stream; do
			run_side "$round" "$mix" "$seconds"
		done
	done
	for row in "${ENVOY_ROWS[@]}"; do
		PROXY_PID=${SIDE_PID[$row]}
		ADMIN_URL=${SIDE_ADMIN[$row]}
		check_routing "$row"
		log "$row: routed $ROUTED"
		stop_proxy
	done
}

STARTED=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "working directory $WORK; proxy on CPU $PROXY_CPU, wrk + mock on CPU $LOAD_CPU; load average $LOAD_START"
start_mock
ENVOY_ROWS=(plain floor switchyard)
((SMOKE)) && ROUNDS=1
for round in $(seq 1 "$ROUNDS"); do
	# Each round starts at another row, so no row is always measured first or last.
	for i in 0 1 2; do
		run_row "$round" "${ENVOY_ROWS[$(((i + round - 1) % 3))]}"
	done
done
if ((SIDE)); then
	side_by_side
fi
if ((!SMOKE && LITELLM_ROW)); then
	run_row 1 litellm
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - STARTED))

if ((SMOKE)); then
	log "smoke: the 3 Envoy rows answered 200 and routed as configured, in ${ELAPSED}s"
	exit 0
fi

# The report: machine, versions, command, then the tables.
litellm_version=n/a
python_version=n/a
if ((LITELLM_ROW)); then
	litellm_version=$(.venv-litellm/bin/python -c 'import importlib.metadata as m; print(m.version("litellm"))')
	python_version=$(.venv-litellm/bin/python -c 'import platform; print(platform.python_version())')
fi
META=$WORK/meta.txt
{
	echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "command=$COMMAND_LINE"
	echo "nproc=$(nproc)"
	echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "kernel=$(uname -sr)"
	echo "memory=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "load_start=$LOAD_START"
	echo "load_end=$LOAD_END"
	echo "envoy=$("$ENVOY" --version | grep -o 'version: [^ ]*' | cut -d/ -f2)"
	echo "wrk=$(wrk -v 2>&1 | head -n1 | awk '{ print $2 }')"
	echo "litellm=$litellm_version"
	echo "python=$python_version"
	echo "rustc=$(rustc --version 2>/dev/null || echo n/a)"
	echo "git=$(git rev-parse --short HEAD 2>/dev/null || echo n/a)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "switchyard_wasm_bytes=$(stat -c %s "$SWITCHYARD_WASM")"
	echo "floor_wasm_bytes=$(stat -c %s "$FLOOR_WASM")"
	echo "chat_body_bytes=$(stat -c %s "$CHAT_BODY")"
	echo "stream_body_bytes=$(stat -c %s "$STREAM_BODY")"
	echo "rounds=$ROUNDS"
	echo "priority=${PRIORITY[*]:-normal}"
	echo "duration=$DURATION"
	echo "warmup=$WARMUP"
	echo "connections=$CONNS"
	echo "low_rate=$LOW_RATE"
	echo "side_duration=$SIDE_DURATION"
	echo "high_rate=$HIGH_RATE"
	echo "elapsed=$ELAPSED"
	echo "raw=$(basename "${OUT%.md}.tsv")"
} >"$META"
mkdir -p "$(dirname "$OUT")"
python3 "$E2E/report.py" "$META" "$RAW" >"$OUT"
cp "$RAW" "${OUT%.md}.tsv"
cat "$OUT"
log "report: $OUT (raw figures: ${OUT%.md}.tsv); full run took ${ELAPSED}s"
