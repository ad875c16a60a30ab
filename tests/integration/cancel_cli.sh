#!/usr/bin/env bash
# Ctrl-C cancels: SIGINT to `kiln build` during a RUN sends Cancel, the RUN's
# processes are gone and the job ends cancelled (exit 130); SIGINT/SIGTERM to
# `kiln push` stuck on a registry that never answers cancels the push job on
# kiln-pusher (exit 130/143); `kiln cancel JOB` stops a job from elsewhere.
# Needs root for the build part (namespaces, overlay).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
for t in jq busybox python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-cancel-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PUSHER=$!; PIDS+=("$PUSHER")
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done

mkdir -p "$T/rootfs/bin" "$T/rootfs/tmp"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
for a in sh sleep echo; do ln -s busybox "$T/rootfs/bin/$a"; done
expect_rc 0 "import" kiln import --quiet "$T/rootfs" base:1

# wait_for FILE JQ-FILTER: until the JSON lines in FILE match (at most 30 s).
wait_for() {
    for _ in $(seq 300); do
        jq -e -s "$2" "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
# reap PID: its exit status; a CLI still running after 30 s is killed (status 124).
reap() {
    for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$1" 2>/dev/null && { kill -9 "$1"; wait "$1"; return 124; }
    wait "$1"
}
job_state() { # the terminal event of JOB as "completed" / "failed:CODE"
    kiln events --no-follow --json "$1" 2>/dev/null |
        jq -r -s '[.[] | select(.completed or .failed)][0] | if .completed then "completed" elif .failed then "failed:" + .failed.error.code else "none" end'
}

# ---- a registry that accepts connections and never answers ----
PORT=$(free_port)
python3 - "$PORT" >"$T/blackhole.log" 2>&1 <<'PY' & PIDS+=($!)
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY
sleep 0.3

for sig in INT TERM; do
    want=$([ $sig = INT ] && echo 130 || echo 143)
    : >"$T/push.json"
    "$KILN_CLI_BIN" push --json --tls-verify=false base:1 "127.0.0.1:$PORT/x/y:1" >"$T/push.json" 2>"$T/push.err" & cli=$!
    wait_for "$T/push.json" 'length > 0' || bad "push $sig: no event within 30 s"
    job=$(jq -r -s '.[0].job_id' "$T/push.json")
    kill -$sig "$cli"
    reap "$cli"; rc=$?
    [ "$rc" = "$want" ] && ok || bad "push SIG$sig: exit $rc, want $want ($(tail -3 "$T/push.err"))"
    grep -q "cancelled push $job" "$T/push.err" && ok || bad "push SIG$sig prints what was cancelled ($(cat "$T/push.err"))"
    [ "$(job_state "$job")" = failed:CANCELLED ] && ok || bad "push job $job ends cancelled on the pusher ($(job_state "$job"))"
done

# kiln cancel JOB from another shell.
"$KILN_CLI_BIN" push --json --tls-verify=false base:1 "127.0.0.1:$PORT/x/y:2" >"$T/push.json" 2>"$T/push.err" & cli=$!
wait_for "$T/push.json" 'length > 0' || bad "push: no event within 30 s"
job=$(jq -r -s '.[0].job_id' "$T/push.json")
expect_rc 0 "kiln cancel JOB" kiln cancel "$job"
grep -q "cancelled $job" "$T/out" && ok || bad "kiln cancel says what it cancelled"
reap "$cli"; rc=$?
[ "$rc" = 5 ] && ok || bad "push cancelled from elsewhere: exit $rc, want 5"
[ "$(job_state "$job")" = failed:CANCELLED ] && ok || bad "kiln cancel: the job ends cancelled"
expect_rc 1 "kiln cancel of a finished job" kiln cancel "$job"
expect_rc 2 "kiln cancel of a bad job id" kiln cancel '../x'

# ---- a build: Ctrl-C during RUN sleep ----
kiln status --json > "$T/status.json" 2>/dev/null
if [ "$(id -u)" != 0 ] || ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: skipping the build part"
else
    mkdir -p "$T/ctx"
    printf 'FROM base:1\nRUN echo started; sleep 3141\nRUN echo never\n' >"$T/ctx/Dockerfile"
    "$KILN_CLI_BIN" build --progress=json -t c:1 "$T/ctx" >"$T/build.json" 2>"$T/build.err" & cli=$!
    wait_for "$T/build.json" '[.[] | select(.output)] | length > 0' || bad "build: RUN output within 30 s"
    job=$(jq -r -s '.[0].job_id' "$T/build.json")
    pgrep -f 'sleep 3141' >/dev/null && ok || bad "the RUN runs before ^C"
    kill -INT "$cli"
    reap "$cli"; rc=$?
    [ "$rc" = 130 ] && ok || bad "build ^C: exit $rc, want 130 ($(tail -3 "$T/build.err"))"
    grep -q "cancelled build $job" "$T/build.err" && ok || bad "build ^C prints what was cancelled"
    pgrep -f 'sleep 3141' >/dev/null && bad "the RUN still runs after ^C" || ok
    [ "$(job_state "$job")" = failed:CANCELLED ] && ok || bad "build job ends cancelled ($(job_state "$job"))"
    [ "$(kiln status --json | jq -r .builder.jobs_running)" = 0 ] && ok || bad "builder has no job left"
    expect_rc 1 "the tag was not created" kiln inspect c:1
fi
# A second Ctrl-C quits at once, even while the Cancel call hangs on a
# stopped kiln-pusher (with a 60 s RPC timeout the first one alone would
# wait).  Last: a client that gives up on a stopped kiln-pusher can leave its
# RPC endpoint unanswering once it runs again.
"$KILN_CLI_BIN" --timeout 60000 push --json --tls-verify=false base:1 "127.0.0.1:$PORT/x/y:9" >"$T/push.json" 2>"$T/push.err" & cli=$!
wait_for "$T/push.json" 'length > 0' || bad "push: no event within 30 s"
kill -STOP "$PUSHER"
kill -INT "$cli"; sleep 0.5; kill -INT "$cli"
reap "$cli"; rc=$?
[ "$rc" = 130 ] && ok || bad "second Ctrl-C: exit $rc, want 130 ($(tail -3 "$T/push.err"))"
[ "$(ps -o stat= -p "$PUSHER" | cut -c1)" = T ] && ok || bad "the CLI waited for the stopped pusher"
kill -CONT "$PUSHER"

finish
