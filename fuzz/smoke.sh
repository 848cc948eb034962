#!/usr/bin/env bash
# A short run of every fuzz target (about 10 s each, after the build) over the committed corpus
# and the inputs of past crashes (regressions/<target>/). New inputs go to a scratch directory, so
# the committed corpus is left as it is. Exits non-zero as soon as a target crashes; the crashing
# input is in fuzz/artifacts/<target>/.
#
#   fuzz/smoke.sh            # every target, 10 s each
#   SECONDS_PER_TARGET=30 fuzz/smoke.sh sse_usage
set -euo pipefail
cd "$(dirname "$0")"

seconds="${SECONDS_PER_TARGET:-10}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_route sse_usage config_load retry_after header_map)
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cargo +nightly fuzz build
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "artifacts/$target"
    inputs=("corpus/$target")
    if [ -d "regressions/$target" ]; then
        inputs+=("regressions/$target")
    fi
    echo "fuzz smoke: $target for ${seconds}s"
    if ! cargo +nightly fuzz run "$target" "$scratch/$target" "${inputs[@]}" -- \
        -max_total_time="$seconds" -dict="dicts/$target.dict" -timeout=10 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
        tail -n 40 "$scratch/$target.log"
        echo "fuzz smoke: $target FAILED; reproduce with: cargo +nightly fuzz run $target fuzz/artifacts/$target/<file>" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done' "$scratch/$target.log" | tr '\n' ' '
    echo
done
echo "fuzz smoke: all targets passed"
