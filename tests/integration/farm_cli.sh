#!/usr/bin/env bash
# A farm of 3 nodes, each in its own network namespace (veth to a bridge),
# mutual TLS to clients, one docker-registry, the pool name farm.test
# resolving to the three nodes through a hosts file (farm_lib.sh).  Checks
# what a CI client sees:
#   - status of the pool, by name and as a list;
#   - affinity: 5 projects x 4 builds: each project stays on one node and its
#     rebuilds are served from the cache (>= 95% of their steps);
#   - bounded load: 6 concurrent builds of one project, capacity 2 per node,
#     spread over >= 2 nodes, none over capacity;
#   - failover: kill -9 of the chosen builder mid-RUN: the build completes on
#     another node with the digest of an undisturbed build; the dead node's
#     projects move, the others' stay;
#   - registry cache: a node restarted on an empty data dir builds a project
#     first built on another node from the records that node exported to the
#     registry (--cache-to/--cache-from) and runs nothing;
#   - drain: SIGTERM during a build: /readyz fails at once, the build
#     finishes, a new build goes elsewhere, the builder exits 0.
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/farm_lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
for t in ip unshare busybox curl jq openssl python3 docker-registry; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
T=$(mktemp -d /tmp/kiln-farm-XXXXXX)
cleanup() {
    [ -n "${GATE:-}" ] && kill "$GATE" 2>/dev/null
    farm_down
    rm -rf "$T"
}
trap cleanup EXIT
ip netns add "kf$$-probe" 2>/dev/null || { echo "cannot create network namespaces"; exit 77; }
ip netns del "kf$$-probe"
export SOURCE_DATE_EPOCH=1700000000

# The gated RUNs reach the hub over the host network of their node.
if ! farm_up 3 --max-builds 2 --allow-insecure-entitlement network.host; then
    grep -h 'sandbox' "$T"/builder*.log | tail -3
    if grep -q 'sandbox FAIL' <(farm_hub curl -s "http://$FARM_NET.10:9465/readyz"); then
        echo "sandbox unusable here"; exit 77
    fi
    bad "the farm did not start"; finish; exit 1
fi
ok

# Status of the pool: by name (3 addresses) and as a list.
expect_rc 0 "pool status" farm_kiln status --json
jq -e '[.builders[] | select(.ready)] | length == 3' "$T/out" >/dev/null && ok \
    || bad "3 ready nodes ($(cat "$T/out"))"
[ "$(jq -r '[.builders[].node_name] | sort | join(",")' "$T/out")" = "kiln-0,kiln-1,kiln-2" ] && ok \
    || bad "node names ($(jq -c '[.builders[].node_name]' "$T/out"))"
FARM_BUILDER="tls+tcp://$FARM_NET.10:7403,tls+tcp://$FARM_NET.11:7403,tls+tcp://$FARM_NET.12:7403" \
    expect_rc 0 "list status" farm_kiln status
grep -c 'ready' "$T/out" | grep -qx 3 && ok || bad "the list form shows 3 ready nodes ($(cat "$T/out"))"

# build OUT ARGS...: a pool build; its node is in OUT.node, the steps run and
# cached in OUT.steps ("run cached").
build() {
    local o=$1; shift
    farm_kiln build --progress=plain --tls-verify=false "$@" >"$o.out" 2>"$o.err"
    local rc=$?
    sed -n 's/^=> on \([^ ]*\) .*/\1/p' "$o.err" | tail -1 > "$o.node"
    echo "$(grep -c '^#[0-9]* DONE' "$o.err") $(grep -c '^#[0-9]* CACHED' "$o.err")" > "$o.steps"
    return $rc
}
project() { # project DIR NAME: a busybox project of a few COPY and RUN steps
    mkdir -p "$1"
    echo "app $2" > "$1/app.txt"; echo "extra $2" > "$1/extra.txt"
    printf 'FROM %s/busybox:1\nCOPY app.txt /app/app.txt\nRUN echo %s > /app/id\nRUN wc -c /app/app.txt > /app/size\nCOPY extra.txt /app/extra.txt\n' \
        "$FARM_REG" "$2" > "$1/Dockerfile"
}

# Affinity.
declare -A HOME_OF
run_total=0 cached_total=0 placed_ok=1
for p in 0 1 2 3 4; do
    project "$T/p$p" "p$p"
    for r in 1 2 3 4; do
        build "$T/b$p-$r" -t "farm/p$p:$r" "$T/p$p" || bad "build p$p #$r ($(tail -c 300 "$T/b$p-$r.err"))"
        n=$(cat "$T/b$p-$r.node")
        [ -n "$n" ] || bad "build p$p #$r says where it runs"
        if [ "$r" = 1 ]; then HOME_OF[$p]=$n; elif [ "$n" != "${HOME_OF[$p]}" ]; then placed_ok=0; fi
        if [ "$r" != 1 ]; then
            read -r run cached < "$T/b$p-$r.steps"
            run_total=$((run_total + run)) cached_total=$((cached_total + cached))
        fi
    done
done
[ "$placed_ok" = 1 ] && ok || bad "each project's builds stay on one node"
echo "placement: p0=${HOME_OF[0]} p1=${HOME_OF[1]} p2=${HOME_OF[2]} p3=${HOME_OF[3]} p4=${HOME_OF[4]}"
echo "rebuilds: $cached_total of $((run_total + cached_total)) steps cached"
[ $((cached_total * 100)) -ge $(((run_total + cached_total) * 95)) ] && [ "$cached_total" -gt 0 ] && ok \
    || bad "rebuilds >= 95% cached ($cached_total cached, $run_total run)"

# A step cache shared through the registry: p0 exports its records from its
# node; another node, restarted on an empty data dir as a new pod with a new
# volume would be, builds p0 from them and runs nothing.
CREF="type=registry,ref=$FARM_REG/farm/cache:p0"
build "$T/rc1" -t farm/p0:rc1 --cache-to "$CREF,mode=max" "$T/p0" \
    && ok || bad "build with --cache-to ($(tail -c 300 "$T/rc1.err"))"
H=${HOME_OF[0]#kiln-}
F=$(((H + 1) % 3))
kill -INT "${FARM_BPID[$F]}" "${FARM_PPID[$F]}"
wait "${FARM_BPID[$F]}" "${FARM_PPID[$F]}" 2>/dev/null
rm -rf "${FARM_DATA[$F]}"
FARM_PPID[F]=
farm_start_node "$F" --max-builds 2 --allow-insecure-entitlement network.host \
    && ok || bad "kiln-$F restarts on an empty data dir"
FARM_BUILDER="tls+tcp://${FARM_IP[$F]}:7403" build "$T/rc2" -t farm/p0:rc2 --cache-from "$CREF" "$T/p0" \
    && ok || bad "build on the fresh kiln-$F with --cache-from ($(tail -c 300 "$T/rc2.err"))"
read -r rc_run rc_cached < "$T/rc2.steps"
[ "$rc_run" = 0 ] && [ "$rc_cached" -gt 0 ] && grep -q 'CACHED (registry)' "$T/rc2.err" && ok \
    || bad "the fresh node ran nothing ($rc_run run, $rc_cached cached: $(grep -E '^#[0-9]+ (DONE|CACHED)' "$T/rc2.err" | tr '\n' ' '))"
[ "$(cat "$T/rc2.out")" = "$(cat "$T/rc1.out")" ] && [ -s "$T/rc1.out" ] && ok \
    || bad "the fresh node's image is the exporter's ($(cat "$T/rc2.out") vs $(cat "$T/rc1.out"))"

# kiln events with the pool: one job on whichever node ran it, and every job
# of every node.
# (a longer RPC timeout than the farm's 3 s: the follower's Status probes of
# the nodes must not time out on a loaded machine, or it leaves a node out)
FARM_TIMEOUT=20000 farm_kiln events --json > "$T/all-events.json" 2>"$T/all-events.err" & EVP=$!
# It says on stderr when its subscriptions to every node's builder events
# endpoint and to the pusher's are connected.
for _ in $(seq 600); do
    grep -q '^kiln: following the events of 4 services$' "$T/all-events.err" && break
    sleep 0.1
done
grep -q '^kiln: following the events of 4 services$' "$T/all-events.err" && ok \
    || bad "kiln events says when it follows the pool's 4 services ($(cat "$T/all-events.err"))"
seen=0
for attempt in 1 2 3 4 5; do
    farm_kiln build --progress=json -t "farm/p0:ev$attempt" "$T/p0" > "$T/ev.json" 2>"$T/ev.err" \
        || bad "json build"
    JOB=$(jq -r 'select(.job_id) | .job_id' "$T/ev.json" | head -1)
    if [ "$attempt" = 1 ]; then
        expect_rc 0 "events of a job in the pool" farm_kiln events --no-follow "$JOB"
        grep -q 'completed\|COMPLETED' "$T/out" && ok \
            || bad "the job's events from its node ($(tail -c 300 "$T/out"))"
    fi
    for _ in $(seq 50); do grep -q "\"$JOB\"" "$T/all-events.json" && break; sleep 0.1; done
    if grep -q "\"$JOB\"" "$T/all-events.json"; then seen=1; break; fi
done
pkill -P "$EVP"; wait "$EVP" 2>/dev/null # (the CLI is the child of the backgrounded function)
[ "$seen" = 1 ] && ok || bad "kiln events follows the pool (job $JOB; stderr: $(tail -c 300 "$T/all-events.err"); $(wc -l < "$T/all-events.json") events seen: $(cut -c1-160 "$T/all-events.json" | tail -n 3))"

# Bounded load: 6 builds of one project held at a gate, capacity 2 per node.
GP=40123
GATE_NETNS=$FARM_HUB gate_server "$GP" "$T/open" "$FARM_NET.1"; GATE=$!
for _ in $(seq 100); do farm_hub curl -s -m 0.2 "http://$FARM_NET.1:$GP/" >/dev/null; [ $? = 28 ] && break; sleep 0.1; done
mkdir -p "$T/hot" && echo hot > "$T/hot/app.txt"
printf 'FROM %s/busybox:1\nCOPY app.txt /app.txt\nRUN echo gate-open; wget -q -O- http://%s:%s/ >/dev/null; echo released > /released\n' \
    "$FARM_REG" "$FARM_NET.1" "$GP" > "$T/hot/Dockerfile"
HOT=()
for k in 1 2 3 4 5 6; do
    build "$T/hot$k" --no-cache --network host -t farm/hot:$k "$T/hot" & HOT+=($!)
    for _ in $(seq 600); do grep -q 'gate-open\|queued' "$T/hot$k.err" 2>/dev/null && break; sleep 0.1; done
done
touch "$T/open"
hot_ok=1
for pid in "${HOT[@]}"; do wait "$pid" || hot_ok=0; done
[ "$hot_ok" = 1 ] && ok || bad "the 6 concurrent builds succeeded ($(tail -c 300 "$T/hot6.err"))"
spread=$(cat "$T"/hot?.node | sort | uniq -c)
echo "6 concurrent builds: ${spread//$'\n'/; }"
[ "$(cat "$T"/hot?.node | sort -u | wc -l)" -ge 2 ] && ok || bad "spread over >= 2 nodes ($spread)"
[ "$(cat "$T"/hot?.node | sort | uniq -c | awk '$1 > 2' | wc -l)" = 0 ] && ok || bad "no node over capacity 2 ($spread)"

# Failover: the digest of an undisturbed build, then the same build with its
# node's builder killed in the middle of the RUN.
mkdir -p "$T/fo" && echo fo > "$T/fo/app.txt"
printf 'FROM %s/busybox:1\nCOPY app.txt /app.txt\nRUN echo gate-open; wget -q -O- http://%s:%s/ >/dev/null; echo done > /done\n' \
    "$FARM_REG" "$FARM_NET.1" "$GP" > "$T/fo/Dockerfile"
build "$T/fo1" --no-cache --network host -t farm/fo:1 "$T/fo" || bad "undisturbed build ($(tail -c 300 "$T/fo1.err"))"
D1=$(cat "$T/fo1.out")
rm -f "$T/open"
build "$T/fo2" --no-cache --network host -t farm/fo:1 "$T/fo" & FO=$!
for _ in $(seq 600); do grep -q 'gate-open' "$T/fo2.err" 2>/dev/null && break; sleep 0.1; done
X=$(sed -n 's/^=> on \([^ ]*\) .*/\1/p' "$T/fo2.err" | head -1)
xi=${X#kiln-}
if [[ "$xi" =~ ^[0-9]$ ]]; then
    kill -9 "${FARM_BPID[$xi]}"; wait "${FARM_BPID[$xi]}" 2>/dev/null
    for _ in $(seq 600); do grep -q 'lost after' "$T/fo2.err" && break; sleep 0.1; done
    touch "$T/open"
    wait "$FO"; rc=$?
    [ "$rc" = 0 ] && ok || bad "the build survived the loss of $X (exit $rc, $(tail -c 400 "$T/fo2.err"))"
    grep -q "=> $X lost after .* continuing on kiln-" "$T/fo2.err" && ok || bad "progress says where it went ($(grep '^=>' "$T/fo2.err"))"
    [ "$(cat "$T/fo2.out")" = "$D1" ] && [ -n "$D1" ] && ok || bad "same digest after failover ($(cat "$T/fo2.out") vs $D1)"
    # The dead node's projects move; the others stay where their cache is.
    moved_ok=1
    for p in 0 1 2 3 4; do
        build "$T/after$p" -t "farm/p$p:5" "$T/p$p" || bad "build p$p after the loss"
        n=$(cat "$T/after$p.node")
        if [ "${HOME_OF[$p]}" = "$X" ]; then [ "$n" != "$X" ] || moved_ok=0
        else [ "$n" = "${HOME_OF[$p]}" ] || moved_ok=0; fi
    done
    [ "$moved_ok" = 1 ] && ok || bad "only the lost node's projects moved"
else
    bad "the failover build says where it runs ($(tail -c 300 "$T/fo2.err"))"
    touch "$T/open"; wait "$FO"
fi

# Drain: SIGTERM to the node running a build.
rm -f "$T/open"
mkdir -p "$T/dr" && echo dr > "$T/dr/app.txt"
printf 'FROM %s/busybox:1\nRUN echo gate-open; wget -q -O- http://%s:%s/ >/dev/null; echo drained > /d\n' \
    "$FARM_REG" "$FARM_NET.1" "$GP" > "$T/dr/Dockerfile"
printf 'FROM %s/busybox:1\nRUN echo elsewhere > /e\n' "$FARM_REG" > "$T/dr/Dockerfile.next"
build "$T/dr1" --no-cache --network host --affinity drain-test "$T/dr" & DR=$!
for _ in $(seq 600); do grep -q 'gate-open' "$T/dr1.err" 2>/dev/null && break; sleep 0.1; done
Y=$(sed -n 's/^=> on \([^ ]*\) .*/\1/p' "$T/dr1.err" | head -1)
yi=${Y#kiln-}
if [[ "$yi" =~ ^[0-9]$ ]]; then
    kill -TERM "${FARM_BPID[$yi]}"
    for _ in $(seq 100); do farm_ready "$yi" || break; sleep 0.1; done
    farm_ready "$yi" && bad "$Y still ready while draining" || ok
    kill -0 "$DR" 2>/dev/null && ok || bad "the build on $Y still runs"
    build "$T/dr2" --affinity drain-test -f "$T/dr/Dockerfile.next" "$T/dr" \
        && ok || bad "a new build while $Y drains ($(tail -c 300 "$T/dr2.err"))"
    n=$(cat "$T/dr2.node")
    [ -n "$n" ] && [ "$n" != "$Y" ] && ok || bad "the new build went elsewhere (on '$n', draining $Y)"
    touch "$T/open"
    wait "$DR"; rc=$?
    [ "$rc" = 0 ] && ok || bad "the build on the draining node finished (exit $rc, $(tail -c 300 "$T/dr1.err"))"
    wait "${FARM_BPID[$yi]}"; rc=$?
    [ "$rc" = 0 ] && ok || bad "$Y's builder exit $rc after the drain"
else
    bad "the drain build says where it runs ($(tail -c 300 "$T/dr1.err"))"
    touch "$T/open"; wait "$DR"
fi
if grep -q 'Sanitizer' "$T"/builder*.log "$T"/pusher*.log; then bad "sanitizer report"; else ok; fi
finish
