#!/usr/bin/env bash
# The kiln CLI against real daemons: exit codes, status (human and --json),
# events, and the HTTP endpoints (/healthz, /readyz, /metrics) seen with curl.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
command -v curl >/dev/null || { echo "curl missing"; exit 77; }
command -v jq >/dev/null || { echo "jq missing"; exit 77; }


T=$(mktemp -d /tmp/kiln-cli-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT

export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

expect_rc 0 "kiln --help" kiln --help
grep -q '^Usage: kiln' "$T/out" && ok || bad "--help prints usage"
expect_rc 0 "kiln --version" kiln --version
grep -q '^kiln [0-9]' "$T/out" && ok || bad "--version prints version"
expect_rc 2 "unknown global flag" kiln --bogus status
expect_rc 2 "unknown verb" kiln frobnicate
expect_rc 2 "no verb" kiln
expect_rc 2 "unknown verb flag" kiln status --bogus
expect_rc 2 "bad endpoint" kiln --pusher http://x status
expect_rc 0 "pusher --help" "$KILN_PUSHER_BIN" --help
expect_rc 0 "builder --version" "$KILN_BUILDER_BIN" --version
expect_rc 2 "pusher unknown flag" "$KILN_PUSHER_BIN" --nope
expect_rc 2 "builder bad --workers" "$KILN_BUILDER_BIN" --workers 0

# Nothing running: unreachable is exit 3, with both services reported.
expect_rc 3 "status without services" kiln status
grep -q 'kiln-pusher.*DOWN' "$T/out" && ok || bad "status shows pusher DOWN"
expect_rc 3 "status --json without services" kiln status --json
[ "$(jq -r '.pusher.reachable' "$T/out")" = false ] && ok || bad "json reachable=false"

# A free port can be taken by a parallel test before the daemon binds it:
# a daemon that exits at start is started again on another port.
start_daemon() { # start_daemon VAR_PORT VAR_PID BIN LOG
    local bin=$3 log=$4 port pid
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        "$bin" --http "127.0.0.1:$port" 2>"$log" & pid=$!
        for _ in $(seq 40); do
            kill -0 "$pid" 2>/dev/null || break
            curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            PIDS+=("$pid"); printf -v "$1" %s "$port"; printf -v "$2" %s "$pid"; return 0
        fi
        echo "$(basename "$bin") exited at start: $(tail -3 "$log")" >&2
    done
    return 1
}
start_daemon HP PPID_ "$KILN_PUSHER_BIN" "$T/pusher.log" || bad "pusher starts"
start_daemon HB BPID "$KILN_BUILDER_BIN" "$T/builder.log" || bad "builder starts"
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.05; done

expect_rc 0 "status with both services" kiln status
grep -q 'kiln-builder.*UP' "$T/out" && grep -q 'kiln-pusher.*UP' "$T/out" && ok || bad "status shows both UP"
expect_rc 0 "status --json" kiln status --json
[ "$(jq -r '.builder.service' "$T/out")" = kiln-builder ] && ok || bad "json builder.service"
[ "$(jq -r '.pusher.pid' "$T/out")" = "$PPID_" ] && ok || bad "json pusher.pid"
[ "$(jq -r '.builder.checks[] | select(.name=="pusher") | .ok' "$T/out")" = true ] && ok || bad "builder sees pusher"

# HTTP endpoints.
[ "$(curl -s "http://127.0.0.1:$HP/healthz")" = ok ] && ok || bad "/healthz"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HB/readyz")" = 200 ] && ok || bad "builder /readyz 200"
curl -s "http://127.0.0.1:$HP/metrics" >"$T/metrics"
grep -q '^kiln_rpc_requests_total{method="Status",code="OK"} [1-9]' "$T/metrics" && ok || bad "metrics count Status"
grep -q '^kiln_rpc_duration_seconds_bucket{method="Status",le="+Inf"}' "$T/metrics" && ok || bad "metrics histogram"
grep -q '^kiln_uptime_seconds ' "$T/metrics" && ok || bad "metrics uptime"
grep -q '^kiln_jobs_running 0' "$T/metrics" && ok || bad "metrics jobs_running"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$HP/metrics")" = 405 ] && ok || bad "POST /metrics is 405"

# events: unknown and malformed job ids.
expect_rc 1 "events for unknown job" kiln events 0123456789abcdef
expect_rc 2 "events for malformed job id" kiln events '../etc'

# The pusher goes away: builder's readiness follows within a probe interval.
kill -TERM "$PPID_"; wait "$PPID_"; rc=$?
[ "$rc" -eq 0 ] && ok || bad "pusher SIGTERM exit $rc"
[ ! -e "$KILN_DATA/run/pusher.sock" ] && ok || bad "pusher socket removed"
code=
for _ in $(seq 60); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HB/readyz")
    [ "$code" = 503 ] && break; sleep 0.1
done
[ "$code" = 503 ] && ok || bad "builder /readyz 503 without pusher (got $code)"
expect_rc 3 "status with pusher down" kiln status
grep -q 'pusher .*FAIL' "$T/out" && ok || bad "builder reports pusher FAIL"

kill -TERM "$BPID"; wait "$BPID"; rc=$?
[ "$rc" -eq 0 ] && ok || bad "builder SIGTERM exit $rc"
PIDS=()

# A crash leaves a backtrace in the log (or, in sanitizer builds, their
# report) and the process dies of the signal.
mkdir -p "$T/crash"
KILN_DATA=$T/crash "$KILN_PUSHER_BIN" 2>"$T/crash.log" & CP=$!
for _ in $(seq 100); do [ -S "$T/crash/run/pusher.sock" ] && break; sleep 0.05; done
kill -SEGV "$CP"; wait "$CP"; rc=$?
[ "$rc" -ne 0 ] && ok || bad "SIGSEGV ends the pusher with a failure status"
grep -Eq 'fatal signal, backtrace|Sanitizer' "$T/crash.log" && ok || bad "a crash leaves a backtrace ($(tail -3 "$T/crash.log"))"

finish
