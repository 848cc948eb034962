-- wrk script of the end-to-end benchmark (benches/e2e.sh): every request POSTs the JSON body in
-- the file $BODY_FILE. With $PACE_MS > 0, each connection waits after an answer before its next
-- request, PACE_MS on average (uniformly 0.5 to 1.5 times, so the connections do not send in
-- step): a paced load of about connections x 1000 / (PACE_MS + latency) requests a second. wrk
-- starts a request's clock when it is sent, so the wait is not counted as latency.
-- done() prints one machine-readable RESULT line (latencies in microseconds).

local body_file = os.getenv("BODY_FILE")
local file = assert(io.open(body_file, "rb"), "BODY_FILE must name a readable file")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

local pace_ms = tonumber(os.getenv("PACE_MS") or "0") or 0
if pace_ms > 0 then
  function setup(thread)
    thread:set("seed", math.random(1, 2 ^ 30))
  end

  function init(args)
    math.randomseed(seed or os.time())
  end

  function delay()
    return math.floor(pace_ms * (0.5 + math.random()) + 0.5)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d errors=%d status_errors=%d timeouts=%d "
      .. "p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
