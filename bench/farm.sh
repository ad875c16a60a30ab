#!/usr/bin/env bash
# Farm benchmark: 30 builds (10 projects x 3 revisions, busybox-based, a few
# COPY and RUN steps, each revision changing only the last COPY) submitted by
# 3 concurrent clients to a pool of 3 nodes and to a pool of 1 node, on this
# machine (tests/integration/farm_lib.sh: a network namespace per node, mutual
# TLS, one registry).  Prints per pool: the cache hit rate on unchanged steps
# of revisions 2 and 3 (goal >= 95% with 3 nodes; random placement would give
# about 33% before caches warm), builds per minute, context chunks sent, and
# the placement spread; then the 3-node / 1-node throughput ratio.  On one
# machine the nodes share its CPUs: the ratio shows placement overhead, not
# the speed-up of separate machines.
#   bench/farm.sh [BUILD_DIR]
# Needs root, iproute2, docker-registry, busybox-static, openssl, curl.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
top=$PWD
B=${1:-build/bench}
if [ ! -x "$B/builder-svc/kiln-builder" ]; then
    cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF >/dev/null
    cmake --build "$B" -j"$(nproc)" --target kiln kiln-builder kiln-pusher >/dev/null
fi
KILN_CLI_BIN=$top/$(cd "$B" && find . -name kiln -type f -perm -u+x | head -1 | sed 's|^\./|'"$B"'/|')
KILN_BUILDER_BIN=$top/$B/builder-svc/kiln-builder
KILN_PUSHER_BIN=$top/$B/pusher-svc/kiln-pusher
export KILN_CLI_BIN KILN_BUILDER_BIN KILN_PUSHER_BIN
[ "$(id -u)" = 0 ] || { echo "bench/farm.sh: needs root (network namespaces, sandbox)" >&2; exit 1; }
for t in ip unshare docker-registry busybox openssl curl; do
    command -v $t >/dev/null || { echo "bench/farm.sh: $t is missing (deploy/install-deps.sh --bench)" >&2; exit 1; }
done
. tests/integration/lib.sh
. tests/integration/farm_lib.sh
T=$(mktemp -d /tmp/kiln-bench-farm-XXXXXX)
trap 'farm_down; rm -rf "$T"' EXIT
export SOURCE_DATE_EPOCH=1700000000

# One pool size: prints its line and leaves builds/minute in $T/bpm.N
run_pool() {
    local n=$1 p r s a
    farm_up "$n" --max-builds 2 || { echo "farm of $n did not start" >&2; return 1; }
    mkdir -p "$T/pool$n"
    for p in $(seq 0 9); do rm -rf "$T/proj$p"; mkdir -p "$T/proj$p"; head -c 262144 /dev/urandom > "$T/proj$p/data.bin"; done
    local t0 t1
    t0=$(date +%s.%N)
    for r in 1 2 3; do
        for p in $(seq 0 9); do
            echo "revision $r" > "$T/proj$p/rev.txt"
            echo "$p" > "$T/proj$p/seed"
            printf 'FROM %s/busybox:1\nCOPY seed /app/seed\nRUN echo project-%s > /app/id\nCOPY data.bin /app/data.bin\nRUN md5sum /app/data.bin > /app/sum\nRUN ls -l /app > /app/list\nCOPY rev.txt /app/rev.txt\n' \
                "$FARM_REG" "$p" > "$T/proj$p/Dockerfile"
        done
        # 3 clients at a time, like 3 CI runners
        local clients=() live q
        for p in $(seq 0 9); do
            while :; do # (the services are jobs of this shell too: count the clients only)
                live=()
                for q in "${clients[@]}"; do kill -0 "$q" 2>/dev/null && live+=("$q"); done
                clients=("${live[@]}")
                [ ${#clients[@]} -lt 3 ] && break
                wait -n "${clients[@]}"
            done
            { farm_kiln build --progress=plain --tls-verify=false -t "bench/p$p:$r" "$T/proj$p" \
                >"$T/pool$n/b$p-$r.out" 2>"$T/pool$n/b$p-$r.err" || echo "build p$p r$r failed" >&2; } &
            clients+=($!)
        done
        for q in "${clients[@]}"; do wait "$q"; done
    done
    t1=$(date +%s.%N)
    local cached=0 unchanged=0 chunks_sent=0 chunks_all=0 f
    for f in "$T/pool$n"/b*-2.err "$T/pool$n"/b*-3.err; do
        cached=$((cached + $(grep -c '^#[0-9]* CACHED' "$f")))
        unchanged=$((unchanged + 5)) # 6 steps, the last one changed
    done
    for f in "$T/pool$n"/b*.err; do
        read -r s a < <(sed -n 's/.*context: .* \([0-9]*\) of \([0-9]*\) chunks sent.*/\1 \2/p' "$f" | tail -1)
        chunks_sent=$((chunks_sent + ${s:-0})) chunks_all=$((chunks_all + ${a:-0}))
    done
    local spread
    spread=$(sed -n 's/^=> on \([^ ]*\) .*/\1/p' "$T/pool$n"/b*.err | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')
    [ -n "$spread" ] || spread="all 30 on the one node (a name with one address is a single builder)"
    awk -v n="$n" -v c="$cached" -v u="$unchanged" -v t0="$t0" -v t1="$t1" -v cs="$chunks_sent" \
        -v ca="$chunks_all" -v sp="${spread%, }" 'BEGIN {
        bpm = 30 / ((t1 - t0) / 60);
        printf "pool of %d: hit rate on unchanged steps %.1f%% (%d/%d), %.1f builds/min, context chunks sent %d of %d, placement: %s\n",
               n, 100 * c / u, c, u, bpm, cs, ca, sp;
        printf "%f\n", bpm > "/dev/stderr" }' 2>"$T/bpm.$n"
    farm_down
}

run_pool 3 || exit 1
FARM_ID=kf$$b FARM_HUB=kf$$b-hub
run_pool 1 || exit 1
awk -v a="$(cat "$T/bpm.3")" -v b="$(cat "$T/bpm.1")" 'BEGIN { printf "throughput ratio pool of 3 / pool of 1: %.2f\n", a / b }'
