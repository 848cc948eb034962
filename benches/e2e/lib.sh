# Shell functions shared by the Envoy benchmarks (benches/e2e.sh, benches/ops.sh,
# benches/envoy-profile.sh); sourced.

# Stops every process in $PIDS and removes $WORK: the EXIT trap of a benchmark that starts servers.
stop_started() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}

# Waits until URL answers 2xx (or the process died, or TIMEOUT seconds passed); on failure shows
# the end of $WORK/NAME.log and calls the sourcing script's `die`.
#   wait_http URL PID TIMEOUT NAME
wait_http() {
	local url=$1 pid=$2 timeout=$3 name=$4 i
	for i in $(seq 1 $((timeout * 10))); do
		curl -sf -o /dev/null --max-time 1 "$url" && return 0
		kill -0 "$pid" 2>/dev/null || { tail -n 30 "$WORK/$name.log" >&2; die "$name exited while starting"; }
		sleep 0.1
	done
	tail -n 30 "$WORK/$name.log" >&2
	die "$name did not answer $url within ${timeout}s"
}

# Starts the mock upstream ($MOCK) on CPU $1 (log: $WORK/mock.log), adds it to $PIDS, waits until
# it answers and clears any default behaviour; sets MOCK_PORT. (e2e.sh starts its own at a priority.)
#   start_mock_on CPU
start_mock_on() {
	read -r MOCK_PORT <<<"$(free_ports 1)"
	taskset -c "$1" "$MOCK" --listen "mock=127.0.0.1:$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
	PIDS+=($!)
	wait_http "http://127.0.0.1:$MOCK_PORT/_mock/hits" "$!" 10 mock
	curl -sf -o /dev/null -X POST "http://127.0.0.1:$MOCK_PORT/_mock/reset"
}

# Every descendant of process $1, by id.
descendants() {
	local children child
	children=$(ps -o pid= --ppid "$1" 2>/dev/null || true)
	for child in $children; do
		echo "$child"
		descendants "$child"
	done
}

# Free loopback ports, all distinct.
free_ports() {
	python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Clock ticks a second: the unit of cpu_ticks (and of e2e.sh's cpu_busy_ticks).
CLK_TCK=$(getconf CLK_TCK)

# utime + stime (clock ticks) of a process and its descendants.
cpu_ticks() {
	local total=0 pid stat fields
	for pid in "$1" $(descendants "$1"); do
		stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		# Fields after "pid (comm) ": state is the 1st, utime the 12th, stime the 13th.
		read -r -a fields <<<"${stat##*) }"
		total=$((total + fields[11] + fields[12]))
	done
	echo "$total"
}

# Writes to OUT the benchmark's Envoy config (benches/e2e/envoy.yaml.in) with the HTTP filter
# SNIPPET (a file; /dev/null for none), listening on LISTEN with its admin API on ADMIN, forwarding
# to the mock on $MOCK_PORT. The snippets' placeholders are filled from $FLOOR_WASM,
# $SWITCHYARD_WASM, $OPS_WASM and $OPS (the ops filter's configuration).
#   render_envoy_yaml SNIPPET OUT LISTEN ADMIN
render_envoy_yaml() {
	local snippet=$1 out=$2 listen=$3 admin=$4
	awk -v snippet="$snippet" '
		/^@HTTP_FILTERS@$/ { while ((getline line < snippet) > 0) print line; next }
		{ print }' "$ROOT/benches/e2e/envoy.yaml.in" |
		sed -e "s|@LISTEN_PORT@|$listen|g" -e "s|@ADMIN_PORT@|$admin|g" -e "s|@MOCK_PORT@|$MOCK_PORT|g" \
			-e "s|@FLOOR_WASM@|${FLOOR_WASM:-}|g" -e "s|@SWITCHYARD_WASM@|${SWITCHYARD_WASM:-}|g" \
			-e "s|@OPS_WASM@|${OPS_WASM:-}|g" -e "s|@OPS@|${OPS:-}|g" >"$out"
}
