#!/usr/bin/env bash
# A long fuzzing campaign: each target in turn for a fixed time, growing corpus/<target>/, then
# printing the executions libFuzzer counted. Logs go to campaign-logs/<target>.log (ignored by git).
# Without AddressSanitizer (`-s none`) by default: the targets run several times faster; debug
# assertions and overflow checks stay on. The filter's two small `unsafe` blocks (text::utf8, the
# header-map hostcall) are reached by request_route and header_map: run those with
# SANITIZER=address.
#
#   fuzz/campaign.sh 900 request_route config_load     # 15 minutes each
#   SANITIZER=address fuzz/campaign.sh 600 sse_usage
#
# Afterwards keep the corpus small: cargo +nightly fuzz cmin -s none <target> -- -dict=dicts/<target>.dict
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:?usage: campaign.sh SECONDS [TARGET ...]}"
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_route sse_usage config_load retry_after header_map)
fi
sanitizer="${SANITIZER:-none}"
mkdir -p campaign-logs

cargo +nightly fuzz build -s "$sanitizer"
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="campaign-logs/$target.log"
    echo "campaign: $target for ${seconds}s (sanitizer: $sanitizer), log in fuzz/$log"
    started=$(date +%s)
    status=0
    cargo +nightly fuzz run -s "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -dict="dicts/$target.dict" -timeout=10 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    elapsed=$(( $(date +%s) - started ))
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
    echo "campaign: $target: ${execs:-?} executions in ${elapsed}s; ${cov}; exit $status"
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log"
        echo "campaign: $target crashed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
