#!/usr/bin/env bash
# Sandbox containment through both services and the CLI: device nodes of a
# base image stay in the image but cannot be opened from RUN; a fork bomb
# and a memory hog each end their RUN with the limit named while a build
# beside them on the same builder completes, and both services stay up; RUN
# and build time limits; a build asking for more than the builder allows is
# refused; RUN's cgroup is not the builder's; a read-only bind stays
# read-only through a submount of the context.  Needs root.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
# The tmpfs this script mounts under a context dir stays in a mount namespace
# of its own (the services started below share it): nothing else sees it.
if [ -z "${KILN_LIMITS_PRIVATE_NS:-}" ]; then
    exec env KILN_LIMITS_PRIVATE_NS=1 unshare --mount --propagation private bash "$0" "$@"
fi
for t in umoci jq busybox; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-limits-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    umount -l "$T/bindctx/sub" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" --run-memory 256M --run-pids 256 --run-timeout 10m --build-timeout 30m \
    2>"$T/builder.log" & BUILDER=$!
PIDS+=("$BUILDER")
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
kiln status --json > "$T/status.json" 2>/dev/null
if ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: $(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")"
    exit 77
fi
has_cg() { jq -e ".builder.checks[] | select(.name==\"sandbox\") | .detail | fromjson | .cgroup_$1" "$T/status.json" >/dev/null; }

# The base: busybox-static plus device nodes that are harmless on any host (a
# null-like char device, and char and block devices of an unassigned major).
B=$T/busybox
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root"
cp "$(command -v busybox)" "$B/bin/busybox"
for a in $("$B/bin/busybox" --list-full); do
    mkdir -p "$B/$(dirname "$a")"; [ -e "$B/$a" ] || ln -s /bin/busybox "$B/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$B/etc/passwd"
printf 'root:x:0:\n' > "$B/etc/group"
chmod 1777 "$B/tmp"
mknod -m 666 "$B/hostnull" c 1 3
mknod -m 666 "$B/hostchr" c 240 0
mknod -m 660 "$B/hostblk" b 240 0
expect_rc 0 "import the base" kiln import --quiet "$B" devbase:1

# --- devices --------------------------------------------------------------
mkdir -p "$T/dev"
cat > "$T/dev/Dockerfile" <<'EOF'
FROM devbase:1
RUN for d in /hostnull /hostchr /hostblk; do \
      (: < $d) 2>/dev/null && echo "$d read-open" || echo "$d read-""denied"; \
      (: > $d) 2>/dev/null && echo "$d write-open" || echo "$d write-""denied"; \
    done; (: < /dev/null) && (: > /dev/null) && echo "devnull-""works"; chmod 0600 /hostnull
EOF
expect_rc 0 "build over a base with device nodes" kiln build --progress=plain -t dev:1 "$T/dev"
for d in hostnull hostchr hostblk; do
    grep -q "/$d read-denied" "$T/err" && grep -q "/$d write-denied" "$T/err" && ok \
        || bad "/$d opened from RUN ($(grep "/$d " "$T/err" | tr '\n' ' '))"
done
grep -q devnull-works "$T/err" && ok || bad "the sandbox's /dev/null works"
umoci unpack --image "$KILN_DATA/store:dev:1" "$T/bundle" >/dev/null 2>&1 && ok || bad "umoci unpack dev:1"
R=$T/bundle/rootfs
[ "$(stat -c '%F %t:%T %a' "$R/hostnull" 2>/dev/null)" = "character special file 1:3 600" ] && ok \
    || bad "the RUN's layer holds the chmod'ed node ($(stat -c '%F %t:%T %a' "$R/hostnull" 2>&1))"
[ "$(stat -c '%F %t:%T' "$R/hostblk" 2>/dev/null)" = "block special file f0:0" ] \
    && [ "$(stat -c '%F %t:%T' "$R/hostchr" 2>/dev/null)" = "character special file f0:0" ] && ok \
    || bad "the base's device nodes are in the image"

# --- fork bomb and memory hog beside a build that completes -----------------
mkdir -p "$T/bomb" "$T/hog" "$T/calm"
printf 'FROM devbase:1\nRUN bomb() { bomb | bomb & }; bomb; sleep 30\n' > "$T/bomb/Dockerfile"
printf 'FROM devbase:1\nRUN x=$(head -c 400000000 /dev/zero | tr "\\\\0" a); echo "sur""vived"\n' > "$T/hog/Dockerfile"
printf 'FROM devbase:1\nRUN sleep 3; echo calm > /calm\n' > "$T/calm/Dockerfile"
kiln build --progress=plain --no-cache -t calm:1 "$T/calm" >"$T/calm.out" 2>"$T/calm.err" & CALM=$!
if has_cg pids; then
    expect_rc 4 "fork bomb" kiln build --progress=plain --pids-limit 32 "$T/bomb"
    grep -q "RUN exceeded its limit of 32 processes" "$T/err" && ok || bad "fork bomb error ($(tail -3 "$T/err"))"
else
    echo "no pids cgroup controller: fork bomb not run"
fi
if has_cg memory; then
    expect_rc 4 "memory hog" kiln build --progress=plain --memory 64M "$T/hog"
    grep -q "RUN exceeded its memory limit of 64 MiB" "$T/err" && ok || bad "memory hog error ($(tail -3 "$T/err"))"
    ! grep -q survived "$T/err" && ok || bad "the hog survived"
else
    echo "no memory cgroup controller: memory hog not run"
fi
wait "$CALM" && ok || bad "the concurrent build failed ($(tail -3 "$T/calm.err"))"
kill -0 "$BUILDER" 2>/dev/null && ok || bad "the builder died"
expect_rc 0 "both services answer" kiln status
# Every step cgroup of the builder is gone.
[ -z "$(find /sys/fs/cgroup/ -maxdepth 7 -type d -name "kiln-$BUILDER-*" 2>/dev/null)" ] && ok \
    || bad "step cgroups left: $(find /sys/fs/cgroup/ -maxdepth 7 -type d -name "kiln-$BUILDER-*" | head -3)"

# --- time limits ----------------------------------------------------------
mkdir -p "$T/slow"
NAP=$((5300 + $$ % 300)) # a number of seconds no other test sleeps
printf 'FROM devbase:1\nRUN sleep %s\n' "$NAP" > "$T/slow/Dockerfile"
expect_rc 4 "RUN time limit" kiln build --progress=plain --run-timeout 2s "$T/slow"
grep -q "RUN exceeded its time limit of 2s" "$T/err" && ok || bad "RUN timeout error ($(tail -3 "$T/err"))"
expect_rc 4 "build time limit" kiln build --progress=plain --build-timeout 3s "$T/slow"
grep -q "build exceeded its time limit of 3s" "$T/err" && ok || bad "build timeout error ($(tail -3 "$T/err"))"
[ -z "$(pgrep -f "sleep $NAP")" ] && ok || bad "a timed-out RUN left processes"

# --- a build may lower the builder's limits, never raise them --------------
expect_rc 4 "memory above the builder's" kiln build --memory 1G "$T/calm"
grep -q "above this builder's maximum of 256 MiB" "$T/err" && ok || bad "refusal message ($(cat "$T/err"))"
expect_rc 4 "pids above the builder's" kiln build --pids-limit 1000 "$T/calm"
grep -q "above this builder's maximum of 256" "$T/err" && ok || bad "pids refusal message ($(cat "$T/err"))"
expect_rc 4 "RUN timeout above the builder's" kiln build --run-timeout 1h "$T/calm"
grep -q "above this builder's maximum of 10m" "$T/err" && ok || bad "timeout refusal message ($(cat "$T/err"))"

# --- RUN's cgroup is not the builder's --------------------------------------
mkdir -p "$T/cg"
printf 'FROM devbase:1\nRUN cat /proc/self/cgroup\n' > "$T/cg/Dockerfile"
expect_rc 0 "cgroup build" kiln build --progress=plain --no-cache "$T/cg"
own=$(grep -E '^[0-9]+:(devices|pids|memory)?:' "/proc/$BUILDER/cgroup" | sort)
inside=$(grep -oE '[0-9]+:(devices|pids|memory)?:/[^ ]*$' "$T/err" | sort)
[ -n "$inside" ] && [ "$inside" != "$own" ] && ok || bad "RUN's /proc/self/cgroup is the builder's ($inside)"
echo "$inside" | grep -q '^0::/.*kiln-' && ok || bad "RUN has no v2 cgroup of its own ($inside)"

# --- a read-only bind stays read-only through a submount of the context ----
mkdir -p "$T/bindctx/sub"
mount -t tmpfs -o size=1m tmpfs "$T/bindctx/sub"
echo host > "$T/bindctx/sub/there"
cat > "$T/bindctx/Dockerfile" <<'EOF'
FROM devbase:1
RUN --mount=type=bind,target=/c cat /c/sub/there && \
    { (echo x >> /c/sub/there) 2>/dev/null && echo "W""ROTE" || echo "sub-read""-only"; } && \
    { (echo x > /c/sub/new) 2>/dev/null && echo "W""ROTE" || echo "sub-read""-only"; }
EOF
expect_rc 0 "bind build" kiln build --progress=plain --no-cache --context-transfer local "$T/bindctx"
[ "$(grep -c sub-read-only "$T/err")" = 2 ] && ! grep -q WROTE "$T/err" && ok \
    || bad "wrote through a submount of a read-only bind"
[ "$(cat "$T/bindctx/sub/there")" = host ] && [ ! -e "$T/bindctx/sub/new" ] && ok || bad "the host saw a write"

finish
