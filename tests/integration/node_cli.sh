#!/usr/bin/env bash
# One farm node: kiln-pusher and kiln-builder each listen on ipc:// (the pod)
# and on tls+tcp:// with mutual TLS (clients).  Checks what a client sees:
# Status names the node and reports platforms, load, capacity and every
# endpoint; a remote build over mTLS follows its events on the TLS endpoint;
# paths on the node are refused over TLS and accepted over ipc://;
# --max-builds 1 queues the second build; SIGTERM drains: /readyz fails and
# Status says draining while the running build goes on, new builds are refused
# (UNAVAILABLE, "draining"), the queued build fails, the running one
# completes, both services exit 0 and remove their socket files.
# Needs root (the sandbox runs RUN steps).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
for t in busybox curl jq openssl python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-node-XXXXXX)
PIDS=()
# SIGINT: the services stop without waiting out a drain.
cleanup() {
    [ -n "${GPID:-}" ] && kill "$GPID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
export KILN_DATA=$T/data
RUN=$KILN_DATA/run
mkdir -p "$T/pki" && make_pki "$T/pki" || { echo "openssl failed"; exit 1; }
PP=$(free_port) PE=$(free_port) PH=$(free_port) BP=$(free_port) BE=$(free_port) BH=$(free_port)
TLS=(--tls-cert "$T/pki/server.crt" --tls-key "$T/pki/server.key" --tls-ca "$T/pki/ca.crt")

"$KILN_PUSHER_BIN" --node-name node-a --http "127.0.0.1:$PH" "${TLS[@]}" \
    --listen "ipc://$RUN/pusher.sock" --listen "tls+tcp://127.0.0.1:$PP" \
    --events "ipc://$RUN/pusher-events.sock" --events "tls+tcp://127.0.0.1:$PE" \
    2>"$T/pusher.log" & PIDS[0]=$!
"$KILN_BUILDER_BIN" --node-name node-a --http "127.0.0.1:$BH" "${TLS[@]}" --max-builds 1 \
    --allow-insecure-entitlement network.host \
    --listen "ipc://$RUN/builder.sock" --listen "tls+tcp://127.0.0.1:$BP" \
    --events "ipc://$RUN/builder-events.sock" --events "tls+tcp://127.0.0.1:$BE" \
    --pusher "ipc://$RUN/pusher.sock" 2>"$T/builder.log" & PIDS[1]=$!

kiln() { "$KILN_CLI_BIN" "$@"; }
remote() {
    "$KILN_CLI_BIN" --builder "tls+tcp://127.0.0.1:$BP" --pusher "tls+tcp://127.0.0.1:$PP" \
        --tls-cert "$T/pki/client.crt" --tls-key "$T/pki/client.key" --tls-ca "$T/pki/ca.crt" \
        --tls-server-name localhost "$@"
}
for _ in $(seq 150); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
kiln status --json >"$T/status.json" 2>/dev/null
if ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here"; exit 77
fi

# Status over mutual TLS: identity, platforms, capacity, both endpoints.
expect_rc 0 "status over mTLS" remote status --json
cp "$T/out" "$T/remote-status.json"
jq -e --arg bp "tls+tcp://127.0.0.1:$BP" '.builder.node_name == "node-a" and .pusher.node_name == "node-a"
      and .builder.max_builds == 1 and (.builder.platforms | length) >= 1
      and (.builder.platforms[0] | test("^linux/")) and (.builder.draining | not)
      and (.builder.listen_urls | index($bp)) != null and (.builder.events_urls | length) == 2' \
    "$T/remote-status.json" >/dev/null && ok || bad "Status over TLS ($(jq -c .builder "$T/remote-status.json"))"
expect_rc 0 "status over ipc" kiln status
grep -q 'node node-a  serving  running 0  queued 0  capacity 1' "$T/out" && ok \
    || bad "kiln status shows the node ($(cat "$T/out"))"
curl -fsS "http://127.0.0.1:$BH/readyz" >/dev/null && ok || bad "builder ready"

# The base, over ipc://; a build over TLS streams its context and follows its
# events on the TLS event endpoint.
busybox_rootfs "$T/busybox"
expect_rc 0 "import busybox" kiln import --quiet "$T/busybox" busybox:local
mkdir -p "$T/ctx" && echo hi > "$T/ctx/a.txt"
printf 'FROM busybox:local\nCOPY a.txt /a.txt\nRUN echo remote-run-output\n' > "$T/ctx/Dockerfile"
expect_rc 0 "remote build over mTLS" remote build --progress=plain -t remote:1 "$T/ctx"
grep -q 'remote-run-output' "$T/err" && ok || bad "RUN output followed over TLS ($(tail -c 300 "$T/err"))"
expect_rc 4 "a host path over TLS" remote build --progress=plain --context-transfer=local "$T/ctx"
grep -q 'takes no paths' "$T/err" && ok || bad "path refused over TLS ($(tail -c 300 "$T/err"))"
expect_rc 0 "a host path over ipc" kiln build --progress=plain --context-transfer=local "$T/ctx"

# A pool whose two endpoints reach this one node is one node.
L="ipc://$RUN/builder.sock,tls+tcp://127.0.0.1:$BP"
expect_rc 0 "status of a two-endpoint pool" remote --builder "$L" status --json
jq -e '(.builders | length) == 1 and .builders[0].node_name == "node-a" and .builders[0].ready' "$T/out" \
    >/dev/null && ok || bad "one node in the pool ($(jq -c .builders "$T/out"))"
expect_rc 0 "a build through the pool" remote --builder "$L" build --progress=plain "$T/ctx"
grep -q '^=> on node-a (affinity)' "$T/err" && ok || bad "progress names the node ($(grep '^=>' "$T/err"))"

# Capacity 1: a build held at a gate runs, a second one queues.
GP=$(free_port)
gate_server "$GP" "$T/release"; GPID=$!
for _ in $(seq 100); do curl -s -m 0.2 "http://127.0.0.1:$GP/" >/dev/null; [ $? = 28 ] && break; sleep 0.1; done
printf 'FROM busybox:local\nRUN echo gate-open; wget -q -O- http://127.0.0.1:%s/ && echo released\n' "$GP" \
    > "$T/ctx/Dockerfile.gate"
printf 'FROM busybox:local\nRUN echo second\n' > "$T/ctx/Dockerfile.second"
remote build --progress=plain --network host -f "$T/ctx/Dockerfile.gate" -t gate:1 "$T/ctx" \
    >"$T/gate.out" 2>"$T/gate.err" & G=$!
for _ in $(seq 300); do grep -q gate-open "$T/gate.err" && break; sleep 0.1; done
grep -q gate-open "$T/gate.err" && ok || bad "the gated RUN started ($(tail -c 300 "$T/gate.err"))"
remote build --progress=plain -f "$T/ctx/Dockerfile.second" "$T/ctx" >"$T/second.out" 2>"$T/second.err" & S=$!
q=
for _ in $(seq 300); do
    q=$(remote status --json 2>/dev/null | jq -r '"\(.builder.builds_running) \(.builder.builds_queued)"')
    [ "$q" = "1 1" ] && break; sleep 0.1
done
[ "$q" = "1 1" ] && ok || bad "Status: 1 running, 1 queued (got '$q')"

# SIGTERM drains.
kill -TERM "${PIDS[1]}"
code=
for _ in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$BH/readyz"); [ "$code" = 503 ] && break; sleep 0.1
done
[ "$code" = 503 ] && ok || bad "/readyz fails while draining (got $code)"
kill -0 "$G" 2>/dev/null && ok || bad "the gated build still runs while draining"
expect_rc 0 "status while draining" remote status --json
jq -e '.builder.draining and .builder.builds_running == 1' "$T/out" >/dev/null && ok \
    || bad "Status says draining ($(jq -c .builder "$T/out"))"
expect_rc 3 "a new build while draining" remote build --progress=plain -f "$T/ctx/Dockerfile.second" "$T/ctx"
grep -q 'draining' "$T/err" && ok || bad "the refusal says draining ($(tail -c 300 "$T/err"))"
wait "$S"; rc=$?
[ "$rc" -ne 0 ] && grep -q 'draining' "$T/second.err" && ok \
    || bad "the queued build failed with draining (exit $rc, $(tail -c 300 "$T/second.err"))"
touch "$T/release"
wait "$G"; rc=$?
[ "$rc" = 0 ] && grep -q released "$T/gate.err" && ok \
    || bad "the running build finished during the drain (exit $rc, $(tail -c 300 "$T/gate.err"))"
[[ "$(cat "$T/gate.out")" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "it printed its digest"
wait "${PIDS[1]}"; rc=$?
[ "$rc" = 0 ] && ok || bad "builder exit $rc after the drain"
kill -TERM "${PIDS[0]}"; wait "${PIDS[0]}"; rc=$?
[ "$rc" = 0 ] && ok || bad "pusher exit $rc"
left=$(ls -A "$RUN" 2>/dev/null)
[ -z "$left" ] && ok || bad "socket files left: $left"
if grep -q 'Sanitizer' "$T/builder.log" "$T/pusher.log"; then bad "sanitizer report"; else ok; fi
finish
