#!/usr/bin/env bash
# kiln build's live view on a terminal, replayed through a terminal model on
# pseudo-terminals of 80 and 40 columns (pty_screen.py): no line is longer
# than the width, the final screen shows every step once it is done and no
# live line is left behind; a resize mid-build is followed; no colour under
# NO_COLOR or TERM=dumb (which gets plain lines).  Needs root (sandbox).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
for t in jq busybox python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
HERE=$(cd "$(dirname "$0")" && pwd)

T=$(mktemp -d /tmp/kiln-tty-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
kiln status --json > "$T/status.json" 2>/dev/null
jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null || { echo "sandbox unusable"; exit 77; }

mkdir -p "$T/rootfs/bin" "$T/rootfs/tmp"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
for a in sh sleep echo; do ln -s busybox "$T/rootfs/bin/$a"; done
expect_rc 0 "import" kiln import --quiet "$T/rootfs" base:1

# Two stages running side by side, long instructions, output lines longer
# than any terminal, UTF-8 and a tab in the output.
L=$(printf 'x%.0s' $(seq 150))
mkdir -p "$T/ctx"
cat >"$T/ctx/Dockerfile" <<DF
FROM base:1 AS first
RUN for i in 1 2 3 4 5 6; do echo "first stage, line \$i: ünïcödé	tab $L"; sleep 0.15; done
FROM base:1 AS second
RUN for i in 1 2 3 4 5 6; do echo "second stage, line \$i: $L"; sleep 0.1; done; echo a-very-long-argument-that-makes-the-instruction-wider-than-forty-columns >/dev/null
FROM base:1
COPY --from=first /bin/echo /first-echo
COPY --from=second /bin/echo /second-echo
ENV GREETING="a value long enough to push this ENV instruction past the edge of a forty column terminal"
RUN echo final step done
DF
expect_rc 0 "plain build (the steps to expect)" kiln build --no-cache --progress=plain -t t:1 "$T/ctx"
steps=$(grep -oE '^#[0-9]+ \[' "$T/err" | sort -u | tr -d ' [' | tr '\n' ' ')
[ -n "$steps" ] && ok || bad "plain build lists its steps"

check_screen() { # check_screen JSON WIDTH DESC
    local j=$1 w=$2 d=$3
    [ "$(jq .rc "$j")" = 0 ] && ok || bad "$d: exit $(jq .rc "$j")"
    [ "$(jq .wraps "$j")" = 0 ] && ok || bad "$d: $(jq .wraps "$j") line(s) longer than $w columns"
    [ "$(jq .max_len "$j")" -le "$w" ] && ok || bad "$d: a line of $(jq .max_len "$j") columns"
    for s in $steps; do
        jq -e --arg s "$s " '[.lines[] | select(startswith($s) and test("DONE|CACHED"))] | length == 1' "$j" >/dev/null \
            && ok || bad "$d: final screen shows step $s done once: $(jq -c --arg s "$s " '[.lines[] | select(startswith($s))]' "$j")"
    done
    jq -e '[.lines[] | select(startswith("  > "))] | length == 0' "$j" >/dev/null && ok || bad "$d: live lines left on the screen"
    grep -Eq '^sha256:[0-9a-f]{64}$' "$T/digest" && ok || bad "$d: digest on stdout"
}
# The view is on stderr (the terminal); stdout, with only the digest, goes to a file.
tty_build() { # tty_build COLS ROWS JSON [--resize C R S] ENV...
    local c=$1 r=$2 j=$3; shift 3
    local rs=()
    [ "${1:-}" = --resize ] && { rs=("$1" "$2" "$3" "$4"); shift 4; }
    [ "${1:-}" = --interrupt ] && { rs=("$1" "$2"); shift 2; }
    : >"$T/digest"
    python3 "$HERE/pty_screen.py" "$c" "$r" "$j" "${rs[@]}" -- env "$@" sh -c 'exec "$0" build --no-cache -t t:1 "$1" >"$2"' \
        "$KILN_CLI_BIN" "$T/ctx" "$T/digest"
}

for w in 80 40; do
    tty_build "$w" 24 "$T/screen$w.json" TERM=xterm
    check_screen "$T/screen$w.json" "$w" "tty at $w columns"
    [ "$(jq .colour "$T/screen$w.json")" = true ] && ok || bad "tty at $w columns: colour on a colour terminal"
done

# Resized from 80 to 40 columns while RUN lines stream.
tty_build 80 24 "$T/resize.json" --resize 40 24 0.6 TERM=xterm
check_screen "$T/resize.json" 40 "resized to 40 columns"

# A short terminal: more running lines than rows never scroll the view away.
tty_build 60 5 "$T/short.json" TERM=xterm
check_screen "$T/short.json" 60 "a 5-row terminal"

tty_build 80 24 "$T/nocolor.json" TERM=xterm NO_COLOR=1
check_screen "$T/nocolor.json" 80 "NO_COLOR"
[ "$(jq .colour "$T/nocolor.json")" = false ] && ok || bad "NO_COLOR: colour printed"

# Ctrl-C on the terminal: the cancel messages are part of the view, not
# drawn over.
cp "$T/ctx/Dockerfile" "$T/Dockerfile.keep"
printf '%s\n' 'FROM base:1' "RUN printf '\\033[31mstarted\\033[0m\\n'; sleep 3141" >"$T/ctx/Dockerfile"
tty_build 60 24 "$T/int.json" --interrupt 2.5 TERM=xterm
cp "$T/Dockerfile.keep" "$T/ctx/Dockerfile"
[ "$(jq .rc "$T/int.json")" = 130 ] && ok || bad "Ctrl-C on a tty: exit $(jq .rc "$T/int.json")"
[ "$(jq .wraps "$T/int.json")" = 0 ] && ok || bad "Ctrl-C on a tty: a line wrapped"
jq -e '[.lines[] | select(startswith("kiln: cancelling build"))] | length == 1' "$T/int.json" >/dev/null && \
    jq -e '[.lines[] | select(startswith("kiln: cancelled build"))] | length == 1' "$T/int.json" >/dev/null && ok || \
    bad "Ctrl-C on a tty: the messages stay on the screen: $(jq -c .lines "$T/int.json")"
pgrep -f 'sleep 3141' >/dev/null && bad "the RUN survived Ctrl-C on a tty" || ok
jq -e '[.lines[] | select(. == "#1 | started")] | length == 1' "$T/int.json" >/dev/null && \
    ! jq -e '[.lines[] | select(startswith("#1 |") and contains("[31m"))] | length > 0' "$T/int.json" >/dev/null && ok || \
    bad "a RUN's own colour codes are dropped: $(jq -c .lines "$T/int.json")"

tty_build 80 24 "$T/dumb.json" TERM=dumb
[ "$(jq .colour "$T/dumb.json")" = false ] && ok || bad "TERM=dumb: colour printed"
jq -e '[.lines[] | select(test("^#[0-9]+ \\| "))] | length > 0' "$T/dumb.json" >/dev/null && ok || bad "TERM=dumb gets the plain lines"
finish
