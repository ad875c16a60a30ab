#!/usr/bin/env bash
# Exit codes and messages: `manifest add` of a tag the registry lacks exits 5
# like pull; a COPY --from naming no stage is blamed on the COPY's line,
# without stuttering; kiln-pusher killed during a build's commit is exit 3
# (unreachable) within seconds.  The build parts need root (sandbox).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
for t in docker-registry jq curl busybox; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-exit-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

PORT=$(free_port)
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry } }
http: { addr: 127.0.0.1:$PORT }
CFG
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
# Registries other than the test's own are reached through a proxy nobody
# listens on: a lookup of an image on Docker Hub fails here, at once.
DEAD=$(free_port)
start_pusher() {
    https_proxy=http://127.0.0.1:$DEAD HTTPS_PROXY=http://127.0.0.1:$DEAD no_proxy=127.0.0.1,localhost \
        "$KILN_PUSHER_BIN" 2>>"$T/pusher.log" & PUSHER=$!
    PIDS+=("$PUSHER")
}
start_pusher
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && kiln status >/dev/null 2>&1 && break
    sleep 0.1
done

mkdir -p "$T/rootfs/bin" "$T/rootfs/tmp"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
for a in sh head echo; do ln -s busybox "$T/rootfs/bin/$a"; done
expect_rc 0 "import" kiln import --quiet "$T/rootfs" base:1

# manifest add of a missing remote tag: a registry failure, like pull.
expect_rc 0 "manifest create" kiln manifest create list:1
expect_rc 5 "pull of a missing tag" kiln pull --tls-verify=false "127.0.0.1:$PORT/no/such:1"
expect_rc 5 "manifest add of a missing tag" kiln manifest add --tls-verify=false list:1 "127.0.0.1:$PORT/no/such:1"
expect_rc 0 "manifest add of a local image" kiln manifest add list:1 base:1

kiln status --json > "$T/status.json" 2>/dev/null
if [ "$(id -u)" != 0 ] || ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: skipping the build parts"
    finish; exit
fi

# COPY --from=<no such stage>: the COPY's line, said once.
mkdir -p "$T/ctx"
printf 'FROM base:1 AS first\nRUN echo hi\nCOPY --from=builder /x /x\n' >"$T/ctx/Dockerfile"
expect_rc 4 "COPY --from an unknown stage" kiln build --progress=plain -t c:1 "$T/ctx"
grep -q 'Dockerfile:3' "$T/err" && ok || bad "unknown stage blamed on the COPY's line: $(cat "$T/err")"
grep -q 'no build stage' "$T/err" && ok || bad "says no such stage: $(cat "$T/err")"
grep -q 'pull builder: pull builder' "$T/err" && bad "stutters: $(cat "$T/err")" || ok

# kiln-pusher killed while it commits a big layer: exit 3, soon.
printf 'FROM base:1\nRUN head -c 400000000 /dev/urandom > /big\n' >"$T/ctx/Dockerfile"
"$KILN_CLI_BIN" build --progress=plain -t big:1 "$T/ctx" >"$T/build.out" 2>"$T/build.err" & cli=$!
for _ in $(seq 1200); do grep -q 'commit job .* accepted' "$T/pusher.log" && break; sleep 0.05; done
grep -q 'commit job .* accepted' "$T/pusher.log" && ok || bad "the build reached its commit"
kill -9 "$PUSHER"; t0=$(date +%s)
for _ in $(seq 600); do kill -0 "$cli" 2>/dev/null || break; sleep 0.1; done
kill -0 "$cli" 2>/dev/null && kill -9 "$cli"
wait "$cli"; rc=$?; t1=$(date +%s)
[ "$rc" = 3 ] && ok || bad "pusher killed during commit: exit $rc, want 3 ($(tail -3 "$T/build.err"))"
# A generous bound: the old wait was 33 s.
[ $((t1 - t0)) -lt 15 ] && ok || bad "exit 3 took $((t1 - t0)) s"
grep -q 'kiln-pusher is unreachable' "$T/build.err" && ok || bad "says the pusher is unreachable: $(tail -3 "$T/build.err")"
finish
