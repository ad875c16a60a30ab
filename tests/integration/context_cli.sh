#!/usr/bin/env bash
# kiln build --context-transfer end to end through both services (FROM scratch,
# COPY and metadata only, so no sandbox and no root needed): a streamed context
# gives the same image as the local path, an unchanged context sends no chunk,
# one changed file in a large context re-sends only some chunks,
# .dockerignore'd files never reach the builder, a symlink to /etc/shadow still
# fails the COPY, prune drops contexts, and a restart removes interrupted ones.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
for t in jq python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
# "context: N files, X MB, S of K chunks sent (R reused)" -> "S K R"
sent_line() { grep '^context:' "$T/err" | tail -1 >&2; sed -n 's/^context: .* \([0-9]*\) of \([0-9]*\) chunks sent (\([0-9]*\) reused)$/\1 \2 \3/p' "$T/err" | tail -1; }

T=$(mktemp -d /tmp/kiln-context-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
export SOURCE_DATE_EPOCH=1700000000
kiln() { "$KILN_CLI_BIN" "$@"; }

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done

C=$T/ctx
mkdir -p "$C/sub" "$C/secret" "$C/data"
echo hello > "$C/a.txt"
echo nested > "$C/sub/b.txt"
ln -s a.txt "$C/link"
echo junk > "$C/ignored.tmp"
echo hidden > "$C/secret/key"
printf '*.tmp\nsecret\n' > "$C/.dockerignore"
printf 'FROM scratch\nCOPY . /app/\nLABEL purpose=context-test\n' > "$C/Dockerfile"
# 8 MB of random files: enough for several content-defined chunks.
python3 - "$C/data" <<'PY'
import os, random, sys
r = random.Random(1234)
for i in range(8):
    with open(os.path.join(sys.argv[1], "f%d.bin" % i), "wb") as f:
        f.write(bytes(r.getrandbits(8) for _ in range(1 << 20)))
PY

# The builder says which host and filesystem it sees.
kiln status --json > "$T/status.json" 2>/dev/null
[ -n "$(jq -r '.builder.host_id // empty' "$T/status.json")" ] && ok || bad "Status carries host_id"

# First streamed build: every chunk goes.
expect_rc 0 "stream build" kiln build --progress=plain --context-transfer=stream -t ctx:stream "$C"
D=$(cat "$T/out")
[[ "$D" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "stream build prints a digest ($D)"
read -r S K R <<<"$(sent_line)"
[ -n "${K:-}" ] && [ "$K" -ge 4 ] && [ "$S" = "$K" ] && [ "$R" = 0 ] && ok || bad "first stream sends all chunks ($(grep '^context:' "$T/err"))"
grep -q '=> context sha256:' "$T/err" && ok || bad "the build reports its context ready"
grep -q '^context: 1[0-9] files' "$T/err" && ok || bad "file count in the progress line ($(grep '^context:' "$T/err"))"

# The same directory as a local path, no cache: the same image.
expect_rc 0 "local build" kiln build --progress=plain --no-cache --context-transfer=local -t ctx:local "$C"
[ "$(cat "$T/out")" = "$D" ] && ok || bad "local and streamed contexts give the same digest"
grep -q '^context:' "$T/err" && bad "local transfer streamed" || ok
# auto: this builder shares our host and filesystem, so the path is sent.
expect_rc 0 "auto build" kiln build --progress=plain --no-cache -t ctx:auto "$C"
[ "$(cat "$T/out")" = "$D" ] && ok || bad "auto gives the same digest"
grep -q '^context:' "$T/err" && bad "auto streamed to a local builder" || ok

# Unchanged context: nothing is sent; --no-cache still rebuilds from it.
expect_rc 0 "stream rebuild" kiln build --progress=plain --no-cache --context-transfer=stream "$C"
read -r S _ R <<<"$(sent_line)"
[ "${S:-x}" = 0 ] && [ "$R" = "$K" ] && ok || bad "unchanged context sends 0 chunks ($(grep '^context:' "$T/err"))"
[ "$(cat "$T/out")" = "$D" ] && ok || bad "rebuild from the kept context gives the same digest"

# json progress: stdout carries only JSON events.
expect_rc 0 "stream build, json" kiln build --progress=json --context-transfer=stream "$C"
jq -e . "$T/out" >/dev/null 2>&1 && ! grep -q '^context:' "$T/out" && ok || bad "json stdout is only events"

# .dockerignore'd files never reach the builder.
n_ctx=0

for d in "$KILN_DATA"/contexts/*/; do
    [ "$(basename "$d")" = chunks ] && continue
    n_ctx=$((n_ctx + 1))
    [ -f "$d/a.txt" ] && [ -f "$d/.dockerignore" ] && [ -L "$d/link" ] && [ -f "$d/data/f7.bin" ] && ok || bad "unpacked context $d is incomplete"
    [ ! -e "$d/ignored.tmp" ] && [ ! -e "$d/secret" ] && ok || bad "ignored files reached the builder ($d)"
done
[ "$n_ctx" = 1 ] && ok || bad "one unpacked context, got $n_ctx"

# '!' exceptions re-include files below an excluded dir; three concurrent
# builds of the same new context unpack it once and agree.
E=$T/ctx-except
mkdir -p "$E/secret/deep"
echo a > "$E/secret/key"; echo b > "$E/secret/keep"; echo c > "$E/secret/deep/x"
printf 'secret\n!secret/keep\n' > "$E/.dockerignore"
printf 'FROM scratch\nCOPY . /app/\n' > "$E/Dockerfile"
head -c 3000000 /dev/urandom > "$E/big"
BG=()
for i in 1 2 3; do
    kiln build --progress=plain --context-transfer=stream "$E" >"$T/conc$i.out" 2>"$T/conc$i.err" & BG+=($!)
done
for i in 0 1 2; do wait "${BG[$i]}" && ok || bad "concurrent build $i ($(tail -c 300 "$T/conc$((i + 1)).err"))"; done
[ "$(cat "$T"/conc*.out | sort -u | wc -l)" = 1 ] && ok || bad "concurrent builds disagree"
[ "$(cat "$T"/conc*.err | grep -c '=> context sha256:.*) ready$')" = 1 ] && ok || bad "the context was unpacked more than once"
X=$(find "$KILN_DATA/contexts" -path '*/secret/keep')
[ -n "$X" ] && [ ! -e "$(dirname "$X")/key" ] && [ ! -e "$(dirname "$X")/deep" ] && ok || bad "exceptions in .dockerignore"
find "$KILN_DATA/contexts" -mindepth 1 -maxdepth 1 -name '*.tmp-*' | grep -q . && bad "temp dirs left by concurrent unpacks" || ok

# <Dockerfile>.dockerignore next to the Dockerfile wins over the context's
# .dockerignore, with the context streamed or sent as a path alike.
G=$T/ign
mkdir -p "$G/df"
echo a > "$G/a.txt"; echo b > "$G/b.txt"; echo c > "$G/c.txt"
printf 'a.txt\n' > "$G/.dockerignore"
printf 'FROM scratch\nCOPY . /x/\n' > "$G/df/app.Dockerfile"
printf 'b.txt\ndf\n' > "$G/df/app.Dockerfile.dockerignore"
for mode in local stream; do
    expect_rc 0 "Dockerfile-specific .dockerignore ($mode)" kiln build --progress=plain \
        --context-transfer=$mode -f "$G/df/app.Dockerfile" -t "ign:$mode" "$G"
done
IL=$(kiln inspect ign:local 2>/dev/null | jq -r .digest); IS=$(kiln inspect ign:stream 2>/dev/null | jq -r .digest)
case "$IL" in sha256:*) [ "$IL" = "$IS" ] && ok || bad "both transfers give the same image ($IL, $IS)" ;;
    *) bad "kiln inspect gives the digest ($IL)" ;; esac
if command -v umoci >/dev/null; then
    (cd "$T" && umoci unpack --image "$KILN_DATA/store:ign:stream" ign-b >/dev/null 2>&1)
    [ -f "$T/ign-b/rootfs/x/a.txt" ] && [ -f "$T/ign-b/rootfs/x/c.txt" ] && [ ! -e "$T/ign-b/rootfs/x/b.txt" ] \
        && [ ! -e "$T/ign-b/rootfs/x/df" ] && ok || bad "the Dockerfile's ignore file was used: $(cd "$T/ign-b/rootfs" 2>/dev/null && find . | tr '\n' ' ')"
fi
rm "$G/df/app.Dockerfile.dockerignore"
expect_rc 0 "without it, the context's .dockerignore" kiln build --progress=plain \
    --context-transfer=local -f "$G/df/app.Dockerfile" -t ign:ctx "$G"
if command -v umoci >/dev/null; then
    (cd "$T" && umoci unpack --image "$KILN_DATA/store:ign:ctx" ign-c >/dev/null 2>&1)
    [ ! -e "$T/ign-c/rootfs/x/a.txt" ] && [ -f "$T/ign-c/rootfs/x/b.txt" ] && ok || bad "the context's .dockerignore applies"
fi

# One byte changed in one 1 MB file: only the chunks around it are sent.
python3 - "$C/data/f3.bin" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(500000); b = f.read(1); f.seek(500000); f.write(bytes([b[0] ^ 0xff]))
PY
expect_rc 0 "stream after a change" kiln build --progress=plain --context-transfer=stream "$C"
read -r S K3 R <<<"$(sent_line)"
[ -n "${S:-}" ] && [ "$S" -ge 1 ] && [ "$S" -lt "$K3" ] && [ "$R" -ge 1 ] && ok \
    || bad "one changed file re-sends some chunks, not all ($(grep '^context:' "$T/err"))"
[ "$(cat "$T/out")" != "$D" ] && ok || bad "the changed context gives a new image"

# A symlink to /etc/shadow travels as a symlink and the COPY still refuses it.
ln -s /etc/shadow "$C/shadow-link"
printf 'FROM scratch\nCOPY shadow-link /stolen\n' > "$T/Dockerfile.symlink"
expect_rc 4 "COPY of a symlink to /etc/shadow" kiln build --progress=plain --context-transfer=stream \
    -f "$T/Dockerfile.symlink" "$C"
grep -q ':2' "$T/err" && ok || bad "the failing COPY is named ($(tail -c 300 "$T/err"))"
rm -f "$C/shadow-link"

# Usage and reachability.
expect_rc 2 "bad --context-transfer" kiln build --context-transfer=sideways "$C"
expect_rc 3 "unreachable builder" kiln --builder "ipc://$T/nobody.sock" build --context-transfer=stream "$C"

# A restart removes interrupted unpacks; prune removes contexts and chunks.
mkdir -p "$KILN_DATA/contexts/$(printf 'a%.0s' $(seq 64)).tmp-XyZ123/sub"
touch "$KILN_DATA/contexts/chunks/.tmp-AbC123"
kill "${PIDS[1]}"; wait "${PIDS[1]}"; rc=$?
[ "$rc" = 0 ] && ok || bad "first builder exit status $rc on SIGTERM"
if grep -q 'Sanitizer' "$T/builder.log"; then
    grep -v 'level=' "$T/builder.log" | head -60 >&2
    bad "sanitizer report in the first builder's log"
fi
mv "$T/builder.log" "$T/builder1.log"
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS[1]=$!
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
find "$KILN_DATA/contexts" -mindepth 1 -maxdepth 1 -name '*.tmp-*' | grep -q . && bad "interrupted unpack left after restart" || ok
[ ! -e "$KILN_DATA/contexts/chunks/.tmp-AbC123" ] && ok || bad "interrupted chunk left after restart"
expect_rc 0 "prune" kiln prune
grep -q 'streamed build context' "$T/out" && ok || bad "prune reports contexts ($(cat "$T/out"))"
[ -z "$(ls -A "$KILN_DATA/contexts/chunks")" ] && [ "$(ls -A "$KILN_DATA/contexts")" = chunks ] && ok \
    || bad "prune left contexts: $(ls -A "$KILN_DATA/contexts")"
# ... and the next streamed build sends everything again and still works.
expect_rc 0 "stream after prune" kiln build --progress=plain --context-transfer=stream "$C"
read -r S K4 R <<<"$(sent_line)"
[ "${S:-x}" = "$K4" ] && ok || bad "after prune every chunk is sent ($(grep '^context:' "$T/err"))"

# The builder shuts down cleanly (and, in sanitizer builds, reports nothing).
kill "${PIDS[1]}"; wait "${PIDS[1]}"; rc=$?
[ "$rc" = 0 ] && ok || bad "builder exit status $rc on SIGTERM"
if grep -q 'Sanitizer' "$T/builder.log"; then
    grep -v 'level=' "$T/builder.log" | head -60 >&2
    bad "sanitizer report in the builder log"
else
    ok
fi

# A builder on tcp:// takes no paths on its host from clients; the CLI's
# auto mode streams to it.
BP=$(free_port); BE=$(free_port)
"$KILN_BUILDER_BIN" --listen "tcp://127.0.0.1:$BP" --events "tcp://127.0.0.1:$BE" 2>"$T/builder-tcp.log" & PIDS[1]=$!
for _ in $(seq 100); do kiln --builder "tcp://127.0.0.1:$BP" status >/dev/null 2>&1 && break; sleep 0.1; done
"$KILN_CLI_BIN" --builder "tcp://127.0.0.1:$BP" build --progress=plain --context-transfer=local "$C" \
    >"$T/out" 2>"$T/err" && bad "a path was accepted over tcp" || ok
grep -q 'takes no paths' "$T/err" && ok || bad "the refusal says why ($(tail -c 300 "$T/err"))"
printf 'k' > "$T/tcp-secret"
printf 'FROM scratch\nCOPY a.txt /\n' > "$T/Dockerfile.tcp"
expect_rc 0 "auto streams to a tcp builder" kiln --builder "tcp://127.0.0.1:$BP" build --progress=plain \
    --secret "id=s,src=$T/tcp-secret" -f "$T/Dockerfile.tcp" "$C"
grep -q '^context:' "$T/err" && ok || bad "the context was streamed ($(tail -c 300 "$T/err"))"
kill "${PIDS[1]}"; wait "${PIDS[1]}"

finish
