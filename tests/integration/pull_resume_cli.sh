#!/usr/bin/env bash
# A pull whose kiln-pusher is killed (kill -9) in the middle of a large layer
# resumes from the partial file the dead process left in the store: the next
# pusher re-hashes those bytes, asks the registry for the rest with Range, and
# the image it tags has the pushed digest.  A partial file whose bytes were
# damaged fails the digest check and is fetched once more from byte 0.  The
# kill happens while a throttling fault_proxy.py feeds the body slowly; the
# restarted pusher pulls through a plain (non-throttling) proxy on the same
# port, which counts the Range requests.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}"
for t in docker-registry skopeo jq curl python3 sha256sum; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
HERE=$(cd "$(dirname "$0")" && pwd)
PROXY_PY=$HERE/../fakes/fault_proxy.py

T=$(mktemp -d /tmp/kiln-pull-resume-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
kiln() { "$KILN_CLI_BIN" "$@"; }

# Starts a pusher on data dir $1 logging to $2 (more arguments: its own); sets PUSHER.
start_pusher() {
    local data=$1 log=$2; shift 2
    KILN_DATA=$data "$KILN_PUSHER_BIN" "$@" 2>>"$log" & PUSHER=$!
    PIDS+=("$PUSHER")
    for _ in $(seq 100); do
        KILN_DATA=$data kiln status --json 2>/dev/null | jq -e .pusher.reachable >/dev/null && return 0
        sleep 0.1
    done
    bad "pusher on $data did not come up: $(tail -5 "$log")"
}
stop_pid() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
# Starts fault_proxy.py on PROXY_PORT with pattern $1, stats in $2; sets PROXY.
start_proxy() {
    python3 "$PROXY_PY" --port "$PROXY_PORT" --upstream "$PORT" --pattern "$1" --stats "$2" \
        --rate 3000000 2>>"$T/proxy.log" & PROXY=$!
    PIDS+=("$PROXY")
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/v2/" && return 0
        sleep 0.1
    done
    bad "proxy did not come up"
}
partial_size() { # bytes in the layer's partial file in data dir $1 (0 when none)
    stat -c %s "$1/store/.kiln/tmp/pull-$LHEX.partial" 2>/dev/null || echo 0
}

PORT=$(free_port)
R=127.0.0.1:$PORT
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry }, delete: { enabled: true } }
http: { addr: $R }
CFG
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://$R/v2/" >/dev/null && break; sleep 0.1; done

# An image with one ~40 MB incompressible layer, pushed directly.
start_pusher "$T/src" "$T/src.log"
mkdir -p "$T/rootfs/data"
head -c 40000000 /dev/urandom > "$T/rootfs/data/big"
expect_rc 0 "import" env KILN_DATA="$T/src" "$KILN_CLI_BIN" import --quiet "$T/rootfs" big:1
D=$(cat "$T/out")
expect_rc 0 "push" env KILN_DATA="$T/src" "$KILN_CLI_BIN" push --tls-verify=false big:1 "$R/team/big:1"
stop_pid "$PUSHER"
LAYER=$(skopeo inspect --tls-verify=false "docker://$R/team/big:1" | jq -r '.Layers[0]')
case "$LAYER" in sha256:*) ok ;; *) bad "no layer digest from skopeo ($LAYER)" ;; esac
LHEX=${LAYER#sha256:}

PROXY_PORT=$(free_port)
P=127.0.0.1:$PROXY_PORT

# Pulls big:1 through a throttling proxy into data dir $1 and kill -9s the
# pusher once the layer's partial file holds more than 5 MB.
interrupted_pull() {
    local data=$1 log=$2
    start_proxy throttle "$T/stats-slow.json"
    start_pusher "$data" "$log"
    KILN_DATA=$data kiln pull --tls-verify=false "$P/team/big:1" >"$T/pull1.out" 2>"$T/pull1.err" &
    local cli=$!
    local size=0
    for _ in $(seq 300); do
        size=$(partial_size "$data")
        [ "$size" -gt 5000000 ] && break
        sleep 0.1
    done
    kill -9 "$PUSHER"
    wait "$PUSHER" 2>/dev/null
    wait "$cli" 2>/dev/null
    stop_pid "$PROXY"
    [ "$size" -gt 5000000 ] && ok || bad "partial file never passed 5 MB ($size)"
    [ -f "$data/store/.kiln/tmp/pull-$LHEX.partial" ] && ok || bad "layer partial survives the kill"
    [ "$(partial_size "$data")" -lt 40000000 ] && ok || bad "the kill came after the whole layer"
}

# Checks that data dir $1 holds the pushed image, its layer intact.
check_pulled() {
    [ "$(cat "$T/out")" = "$D" ] && ok || bad "$1: pull gives the pushed digest ($(cat "$T/out"))"
    jq -e --arg d "$D" '[.manifests[] | select(.digest == $d)] | length > 0' \
        "$2/store/index.json" >/dev/null && ok || bad "$1: index.json has $D"
    [ "$(sha256sum "$2/store/blobs/sha256/$LHEX" | cut -d' ' -f1)" = "$LHEX" ] && ok ||
        bad "$1: the layer hashes to its digest"
    [ ! -e "$2/store/.kiln/tmp/pull-$LHEX.partial" ] && ok || bad "$1: the layer's partial is gone"
}

# ---- 1. kill -9 in the middle of the layer, restart, resume ----
A=$T/a
interrupted_pull "$A" "$T/a1.log"
# A day-old abandoned partial goes at the next start; a young one stays.
OLD=$A/store/.kiln/tmp/pull-$(printf '0%.0s' $(seq 64)).partial
YOUNG=$A/store/.kiln/tmp/pull-$(printf '1%.0s' $(seq 64)).partial
echo stale > "$OLD" && touch -d '2 days ago' "$OLD"
echo young > "$YOUNG"
start_proxy ok "$T/stats-a.json"
HP=$(free_port)
start_pusher "$A" "$T/a2.log" --http "127.0.0.1:$HP"
[ ! -e "$OLD" ] && ok || bad "a 2-day-old partial is removed at start"
[ -e "$YOUNG" ] && ok || bad "a young partial survives the start"
expect_rc 0 "resumed pull" env KILN_DATA="$A" "$KILN_CLI_BIN" pull --tls-verify=false "$P/team/big:1"
check_pulled resume "$A"
AT=$(sed -n "s/.*resuming pull of $LAYER at \([0-9]*\) of \([0-9]*\) bytes.*/\1/p" "$T/a2.log" | head -1)
[ "${AT:-0}" -gt 5000000 ] && ok || bad "log says the layer resumed past 5 MB (${AT:-no line}): $(grep -i resum "$T/a2.log" | head -3)"
[ "$(jq .range_gets "$T/stats-a.json")" -ge 1 ] && ok || bad "the registry saw a Range request"
curl -s "http://127.0.0.1:$HP/metrics" >"$T/metrics"
grep -q '^kiln_pusher_registry_bytes_resumed_total{direction="pulled"} [1-9]' "$T/metrics" && ok ||
    bad "metrics count the resumed bytes: $(grep resumed "$T/metrics")"
expect_rc 0 "prune" env KILN_DATA="$A" "$KILN_CLI_BIN" prune --store-only
[ -z "$(find "$A/store/.kiln/tmp" -name '*.partial')" ] && ok || bad "prune removes unlocked partials"
stop_pid "$PUSHER"
stop_pid "$PROXY"

# ---- 2. the partial's bytes were damaged: digest check fails, refetch from 0 ----
B=$T/b
interrupted_pull "$B" "$T/b1.log"
printf '\377\377\377\377\377\377\377\377' |
    dd of="$B/store/.kiln/tmp/pull-$LHEX.partial" bs=1 seek=1000000 conv=notrunc 2>/dev/null
start_proxy ok "$T/stats-b.json"
start_pusher "$B" "$T/b2.log"
expect_rc 0 "pull over a damaged partial" env KILN_DATA="$B" "$KILN_CLI_BIN" pull --tls-verify=false "$P/team/big:1"
check_pulled damaged "$B"
grep -q "resuming pull of $LAYER" "$T/b2.log" && ok || bad "damaged partial: resumed first"
grep -q "resumed pull of $LAYER failed its digest check" "$T/b2.log" && ok ||
    bad "damaged partial: digest failure logged: $(grep -i "$LHEX" "$T/b2.log" | tail -3)"
stop_pid "$PUSHER"

# Sanitizer builds: the pushers that were stopped cleanly reported nothing.
if grep -l 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$T"/*.log >"$T/san" 2>/dev/null; then
    bad "sanitizer report in $(cat "$T/san"): $(xargs grep -h -m3 'Sanitizer\|runtime error:' <"$T/san")"
else
    ok
fi

finish
