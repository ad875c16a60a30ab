# shellcheck shell=bash
# Shared helpers of the integration scripts (sourced; $T is the script's temp dir).
#   ok / bad MSG          count a check (bad prints MSG on stderr)
#   expect_rc WANT DESC CMD...   run CMD with stdout in $T/out, stderr in $T/err
#   free_port             a free TCP port on 127.0.0.1
#   finish                print the tally (and, after a failure, the tails of the
#                         services' logs in $T); its status is the script's
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
expect_rc() {
    local want=$1 desc=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"; local rc=$?
    if [ "$rc" -eq "$want" ]; then ok; else bad "$desc: exit $rc, want $want ($(tail -c 400 "$T/err"))"; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
finish() {
    echo "$pass passed, $fail failed"
    if [ "$fail" -ne 0 ]; then # what the services said, for the failure report
        for l in "$T"/pusher*.log "$T"/builder*.log; do
            [ -f "$l" ] && { echo "--- $(basename "$l") (last lines)"; grep -v 'level=info' "$l" | tail -25; }
        done
    fi
    [ "$fail" -eq 0 ]
}
