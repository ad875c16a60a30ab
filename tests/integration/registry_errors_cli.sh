#!/usr/bin/env bash
# Registry errors fast and clear: a plain-HTTP registry reached over HTTPS
# and a refused connection fail at once with no retries and say what to do;
# registries on the loopback may speak plain HTTP without --tls-verify=false
# (as Docker allows); 5xx is retried exactly --retry times.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}"
for t in docker-registry skopeo jq curl busybox python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
HERE=$(cd "$(dirname "$0")" && pwd)

T=$(mktemp -d /tmp/kiln-reg-err-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }
retries() { jq -s '[.[] | select(.blob.kind=="RETRIED")] | length' "$T/out"; }

PORT=$(free_port)
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry } }
http: { addr: 127.0.0.1:$PORT }
CFG
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && kiln status --json 2>/dev/null | jq -e .pusher.reachable >/dev/null && break
    sleep 0.1
done
mkdir -p "$T/rootfs/bin"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
expect_rc 0 "import" kiln import --quiet "$T/rootfs" app:1
D=$(cat "$T/out")

# Plain HTTP reached as HTTPS (0.0.0.0 reaches the same listener but is not
# a loopback name): one clear error, no retries.
expect_rc 5 "push to a plain-HTTP registry without --tls-verify=false" kiln push --json app:1 "0.0.0.0:$PORT/a/b:1"
grep -q 'server gave HTTP response to HTTPS client' "$T/err" && grep -q -- '--tls-verify=false' "$T/err" \
    && ok || bad "protocol mismatch says what to do ($(cat "$T/err"))"
[ "$(retries)" = 0 ] && ok || bad "protocol mismatch retried $(retries) times"

expect_rc 0 "push REF DEST --tls-verify=false (the flag after the arguments)" kiln push app:1 "0.0.0.0:$PORT/a/b:1" --tls-verify=false

# A refused connection: no retries.
DEAD=$(free_port)
expect_rc 5 "push to a port nobody listens on" kiln push --json app:1 "127.0.0.1:$DEAD/a/b:1"
grep -qi "couldn't connect\|connection refused" "$T/err" && ok || bad "refused: $(cat "$T/err")"
[ "$(retries)" = 0 ] && ok || bad "refused connection retried $(retries) times"

# Loopback registries may speak plain HTTP without the flag.
expect_rc 0 "push to 127.0.0.1 without --tls-verify=false" kiln push app:1 "127.0.0.1:$PORT/a/b:1"
[ "$(skopeo inspect --tls-verify=false "docker://127.0.0.1:$PORT/a/b:1" | jq -r .Digest)" = "$D" ] \
    && ok || bad "skopeo sees the push to 127.0.0.1"
expect_rc 0 "push to localhost without --tls-verify=false" kiln push app:1 "localhost:$PORT/a/c:1"
expect_rc 0 "pull from 127.0.0.1 without --tls-verify=false" kiln pull "127.0.0.1:$PORT/a/b:1"

# 5xx: retried exactly --retry times, with --retry-delay between tries.
PROXY_PORT=$(free_port)
python3 "$HERE/../fakes/fault_proxy.py" --port "$PROXY_PORT" --upstream "$PORT" --pattern 503 \
    --stats "$T/proxy.json" 2>>"$T/proxy.log" & PIDS+=($!)
for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PROXY_PORT/v2/")" = 503 ] && break
    sleep 0.1
done
expect_rc 5 "pull through a registry that answers 503" \
    kiln pull --json --tls-verify=false --retry 2 --retry-delay 100ms "127.0.0.1:$PROXY_PORT/a/b:1"
[ "$(retries)" = 2 ] && ok || bad "--retry 2: $(retries) retries"
expect_rc 5 "--retry 0" kiln pull --json --tls-verify=false --retry 0 "127.0.0.1:$PROXY_PORT/a/b:1"
[ "$(retries)" = 0 ] && ok || bad "--retry 0: $(retries) retries"
grep -q 'HTTP 503' "$T/err" && ok || bad "503 reported ($(cat "$T/err"))"
expect_rc 2 "--retry x" kiln pull --retry x "127.0.0.1:$PORT/a/b:1"
expect_rc 2 "--retry-delay forever" kiln pull --retry-delay forever "127.0.0.1:$PORT/a/b:1"
finish
