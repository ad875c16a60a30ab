#!/usr/bin/env bash
# Docker habits of the store verbs: -q (images, import, build), --format
# json|table|TEMPLATE for images, short image ids wherever a reference goes,
# and prune asking before it deletes on a terminal (unless -f).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
for t in jq busybox python3 skopeo; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
HERE=$(cd "$(dirname "$0")" && pwd)

T=$(mktemp -d /tmp/kiln-images-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done

mkdir -p "$T/a/bin" "$T/b/bin"
cp "$(command -v busybox)" "$T/a/bin/busybox"
echo b >"$T/b/bin/b"
expect_rc 0 "import -q" kiln import -q "$T/a" app:1
A=$(cat "$T/out")
[[ "$A" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "import -q prints only the digest ($A)"
expect_rc 0 "import" kiln import -q "$T/b" other:2
B=$(cat "$T/out")
expect_rc 0 "tag" kiln tag app:1 app:latest

expect_rc 0 "images -q" kiln images -q
[ "$(sort "$T/out" | tr '\n' ' ')" = "$(printf '%s\n%s\n' "${A:7:12}" "${B:7:12}" | sort | tr '\n' ' ')" ] \
    && ok || bad "images -q: each image id once: $(cat "$T/out")"
expect_rc 0 "images --format template" kiln images --format '{{.Repository}}:{{.Tag}}\t{{.ID}}'
grep -qxP "app:1\t${A:7:12}" "$T/out" && grep -qxP "other:2\t${B:7:12}" "$T/out" && ok || bad "template: $(cat "$T/out")"
expect_rc 0 "images --format json" kiln images --format json
jq -e '.images | length == 3' "$T/out" >/dev/null && ok || bad "--format json"
expect_rc 0 "images --format table" kiln images --format table
grep -q '^REFERENCE' "$T/out" && ok || bad "--format table"
expect_rc 2 "images --format with an unknown field" kiln images --format '{{.Nope}}'

# Short ids (4+ hex digits) where a reference goes.
expect_rc 0 "inspect by short id" kiln inspect "${B:7:6}"
[ "$(jq -r .digest "$T/out")" = "$B" ] && ok || bad "inspect by short id names the image"
expect_rc 0 "tag by short id" kiln tag "${B:7:8}" byid:1
[ "$(skopeo inspect --raw "oci:$KILN_DATA/store:byid:1" | sha256sum | cut -c1-64)" = "${B:7}" ] && ok || bad "tag by id: skopeo sees the image"
expect_rc 0 "history by sha256:prefix" kiln history "sha256:${A:7:10}"
expect_rc 0 "rmi by short id" kiln rmi "${B:7:12}"
kiln inspect other:2 >/dev/null 2>&1 && bad "rmi by id removed the image's tags" || ok

# build -q: the digest and nothing else.
mkdir -p "$T/ctx"
printf 'FROM app:1\nENV A=1\nLABEL x=y\n' >"$T/ctx/Dockerfile"
expect_rc 0 "build -q" kiln build -q -t q:1 "$T/ctx"
[[ "$(cat "$T/out")" =~ ^sha256:[0-9a-f]{64}$ ]] && [ ! -s "$T/err" ] && ok || bad "build -q: $(cat "$T/out") / $(cat "$T/err")"

# What a rebuild or re-tag leaves behind is listed as <none> until prune.
mkdir -p "$T/c/etc" && echo one >"$T/c/etc/v"
expect_rc 0 "import dang:1" kiln import -q "$T/c" dang:1
C1=$(cat "$T/out")
echo two >"$T/c/etc/v"
expect_rc 0 "import dang:1 again, changed" kiln import -q "$T/c" dang:1
expect_rc 0 "images" kiln images
grep -E "^<none> +${C1:7:12} " "$T/out" >/dev/null && ok || bad "the old dang:1 is listed as <none>: $(cat "$T/out")"
expect_rc 0 "images --format" kiln images --format '{{.Repository}}:{{.Tag}} {{.ID}}'
grep -qx "<none>:<none> ${C1:7:12}" "$T/out" && ok || bad "<none> in a template: $(cat "$T/out")"
expect_rc 0 "images -q" kiln images -q
grep -qx "${C1:7:12}" "$T/out" && ok || bad "images -q lists the untagged image"
expect_rc 0 "inspect an untagged image by short id" kiln inspect "${C1:7:8}"
[ "$(jq -r .digest "$T/out")" = "$C1" ] && ok || bad "inspect by the untagged id"
expect_rc 0 "prune -f" kiln prune -f --store-only
expect_rc 0 "images after prune" kiln images -q
grep -qx "${C1:7:12}" "$T/out" && bad "prune left the untagged image" || ok

# prune asks on a terminal; -f and pipes do not.
python3 "$HERE/pty_screen.py" 80 24 "$T/prune.json" --input $'n\n' -- "$KILN_CLI_BIN" prune --store-only
[ "$(jq .rc "$T/prune.json")" = 1 ] && ok || bad "prune answered n: exit $(jq .rc "$T/prune.json")"
jq -e '[.lines[] | select(test("continue\\? \\[y/N\\]"))] | length == 1' "$T/prune.json" >/dev/null && \
    jq -e '[.lines[] | select(test("Nothing removed"))] | length == 1' "$T/prune.json" >/dev/null && ok || bad "prune asked: $(jq -c .lines "$T/prune.json")"
python3 "$HERE/pty_screen.py" 80 24 "$T/prune-y.json" --input $'y\n' -- "$KILN_CLI_BIN" prune --store-only
[ "$(jq .rc "$T/prune-y.json")" = 0 ] && jq -e '[.lines[] | select(test("^Removed"))] | length == 1' "$T/prune-y.json" >/dev/null \
    && ok || bad "prune answered y: $(jq -c .lines "$T/prune-y.json")"
python3 "$HERE/pty_screen.py" 80 24 "$T/prune-f.json" -- "$KILN_CLI_BIN" prune -f --store-only
[ "$(jq .rc "$T/prune-f.json")" = 0 ] && ! jq -e '[.lines[] | select(test("y/N"))] | length > 0' "$T/prune-f.json" >/dev/null \
    && ok || bad "prune -f asked or failed: $(jq -c .lines "$T/prune-f.json")"
expect_rc 0 "prune from a pipe does not ask" kiln prune --store-only </dev/null
finish
