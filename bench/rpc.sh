#!/usr/bin/env bash
# Status RPC round trip (p50/p99) over ipc:// and tcp:// against a raw NNG
# req/rep ping-pong of the same request and reply sizes, measured in the same
# run on the same machine.  Goal: Kiln / raw <= 1.5.
#   bench/rpc.sh [BUILD_DIR] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/bench}
N=${2:-20000}
if [ ! -x "$B/bench/kiln-rpc-bench" ]; then
    deploy/install-deps.sh >/dev/null
    cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF >/dev/null
    cmake --build "$B" -j"$(nproc)" --target kiln-pusher kiln-rpc-bench >/dev/null
fi
T=$(mktemp -d /tmp/kiln-bench-rpc-XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

printf '%-5s %-6s %9s %9s %9s %7s %7s\n' transport what p50_us p99_us mean_us req_B reply_B
for tr in ipc tcp; do
    if [ $tr = ipc ]; then ku="ipc://$T/pusher.sock"; ru="ipc://$T/raw.sock"
    else ku="tcp://127.0.0.1:$(port)"; ru="tcp://127.0.0.1:$(port)"; fi
    "$B/pusher-svc/kiln-pusher" --data "$T/data" --listen "$ku" --events "ipc://$T/ev-$tr.sock" \
        --log-level warn 2>"$T/pusher-$tr.log" & PIDS+=($!)
    sleep 0.3
    read -r kp50 kp99 kmean req rep < <("$B/bench/kiln-rpc-bench" kiln "$ku" "$N")
    "$B/bench/kiln-rpc-bench" raw-server "$ru" "$rep" & PIDS+=($!)
    sleep 0.2
    read -r rp50 rp99 rmean _ _ < <("$B/bench/kiln-rpc-bench" raw "$ru" "$req" "$N")
    printf '%-5s %-6s %9s %9s %9s %7s %7s\n' $tr kiln "$kp50" "$kp99" "$kmean" "$req" "$rep"
    printf '%-5s %-6s %9s %9s %9s %7s %7s\n' $tr raw "$rp50" "$rp99" "$rmean" "$req" "$rep"
    awk -v a="$kp50" -v b="$rp50" -v c="$kp99" -v d="$rp99" -v t=$tr \
        'BEGIN { printf "%-5s ratio  p50 %.2fx  p99 %.2fx  (goal <= 1.5x)\n", t, a/b, c/d }'
done
