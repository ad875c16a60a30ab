#!/usr/bin/env bash
# The command line is checked before anything is sent (a bad tag must not
# cost a build), usage errors say what is wrong, and docker habits work:
# flags after arguments, `--`, `kiln help VERB`, `kiln version`, typo hints.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
command -v jq >/dev/null || { echo "jq missing"; exit 77; }

T=$(mktemp -d /tmp/kiln-args-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done

mkdir -p "$T/ctx"
printf 'FROM scratch\nRUN touch /ran\n' >"$T/ctx/Dockerfile"

# ---- checked before anything is sent ----
expect_rc 2 "build -t MyApp:1" kiln build --progress=plain -t 'MyApp:1' "$T/ctx"
grep -q 'lowercase' "$T/err" && ok || bad "bad tag: says why ($(cat "$T/err"))"
expect_rc 2 "build, second -t bad" kiln build --progress=plain -t ok:1 -t 'a b' "$T/ctx"
expect_rc 2 "build --iidfile in a missing dir" kiln build -t ok:1 --iidfile "$T/no/such/iid" "$T/ctx"
expect_rc 2 "build -f missing" kiln build -t ok:1 -f "$T/nope" "$T/ctx"
expect_rc 2 "build of a missing context" kiln build -t ok:1 "$T/no-ctx"
expect_rc 2 "build --platform linux" kiln build -t ok:1 --platform linux "$T/ctx"
expect_rc 2 "build --push without -t" kiln build --push "$T/ctx"
expect_rc 2 "build --build-arg =x" kiln build -t ok:1 --build-arg =x "$T/ctx"
grep -q 'accepted' "$T/builder.log" && bad "a bad command line reached the builder" || ok
expect_rc 2 "push Bad:1" kiln push 'Bad:1'
expect_rc 2 "push to a bad destination" kiln push ok:1 'localhost:5000/UP:1'
expect_rc 2 "push --authfile missing" kiln push --authfile "$T/nope.json" ok:1
expect_rc 2 "push --cert-dir missing" kiln push --cert-dir "$T/nope.d" ok:1
expect_rc 2 "pull --platform linux" kiln pull --platform linux ok:1
expect_rc 2 "pull of a bad reference" kiln pull 'x/Y'
expect_rc 2 "tag to a bad target" kiln tag ok:1 'B:1'
expect_rc 2 "tag to a digest" kiln tag ok:1 "ok@sha256:$(printf '%064d' 0)"
expect_rc 2 "manifest create of a bad name" kiln manifest create 'L:1:2'
expect_rc 2 "import as a bad reference" kiln import "$T/ctx" 'I:1'
grep -q 'accepted' "$T/pusher.log" && bad "a bad command line reached the pusher" || ok

# ---- usage messages ----
expect_rc 2 "images a b" kiln images a b
grep -q "takes no arguments" "$T/err" && ! grep -q 'got 2' "$T/err" && ok || bad "images a b: $(cat "$T/err")"
expect_rc 2 "inspect with two" kiln inspect a b
grep -q "expected 1 argument(s), got 2" "$T/err" && ok || bad "inspect a b: $(cat "$T/err")"

# ---- habits ----
mkdir -p "$T/rootfs/bin"
echo hi >"$T/rootfs/bin/hi"
expect_rc 0 "flags after arguments (import DIR REF --quiet)" kiln import "$T/rootfs" base:1 --quiet
grep -Eq '^sha256:[0-9a-f]{64}$' "$T/out" && ok || bad "--quiet after the arguments applies: $(cat "$T/out")"
expect_rc 0 "flags after arguments (inspect REF --help)" kiln inspect base:1 --help
grep -q '^Usage: kiln inspect' "$T/out" && ok || bad "inspect REF --help prints usage"
expect_rc 2 "build CONTEXT -t BAD: the tag after the context is checked" kiln build "$T/ctx" -t 'MyApp:1'
grep -q 'lowercase' "$T/err" && ok || bad "build CONTEXT -t: $(cat "$T/err")"
expect_rc 1 "-- ends flags" kiln inspect -- --help
grep -q 'Usage' "$T/out" && bad "-- did not end the flags" || ok
expect_rc 0 "kiln help push" kiln help push
grep -q '^Usage: kiln push' "$T/out" && ok || bad "kiln help push prints push's usage"
expect_rc 0 "kiln help" kiln help
grep -q '^Usage: kiln' "$T/out" && ok || bad "kiln help prints usage"
expect_rc 0 "kiln version" kiln version
grep -q '^kiln [0-9]' "$T/out" && ok || bad "kiln version prints the version"
expect_rc 2 "a typo" kiln biuld .
grep -q 'Did you mean build?' "$T/err" && ok || bad "typo hint: $(cat "$T/err")"
expect_rc 2 "kiln help of a typo" kiln help pussh
grep -q 'Did you mean push?' "$T/err" && ok || bad "help typo hint: $(cat "$T/err")"

finish
