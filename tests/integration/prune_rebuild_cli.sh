#!/usr/bin/env bash
# A rebuild after `kiln prune` ships what its RUN produced this time: the
# pusher must not reuse the layer it packed from the pruned step, although the
# builder puts the new step at the same path.  Checked with umoci on the
# store (the layer's content) and with the image digests; an unchanged
# rebuild still packs nothing.  Needs root (RUN sandbox).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
for t in umoci jq busybox; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-prune-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
# Same inputs, same digest: only a layer's content can change it.
export SOURCE_DATE_EPOCH=1700000000
kiln() { "$KILN_CLI_BIN" "$@"; }

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
kiln status --json > "$T/status.json" 2>/dev/null
if ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: $(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")"
    exit 77
fi

B=$T/busybox
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/proc"
cp "$(command -v busybox)" "$B/bin/busybox"
for a in sh cat tee; do ln -s busybox "$B/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$B/etc/passwd"
chmod 1777 "$B/tmp"
expect_rc 0 "import busybox" kiln import --quiet "$B" busybox:local

mkdir "$T/ctx"
printf 'FROM busybox:local\nRUN cat /proc/sys/kernel/random/uuid | tee /id\n' > "$T/ctx/Dockerfile"

# build N: sets D (digest), RAN (the id the RUN printed, "" when cached) and
# IN (the id in the image's layer, as umoci unpacks it).
build() {
    expect_rc 0 "build $1" kiln build --progress=plain -t prune:test "$T/ctx"
    D=$(cat "$T/out")
    RAN=$(grep -aoE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$T/err" | head -1)
    rm -rf "$T/bundle"
    if umoci unpack --image "$KILN_DATA/store:prune:test" "$T/bundle" >/dev/null 2>"$T/umoci.err"; then
        IN=$(cat "$T/bundle/rootfs/id")
    else
        IN=""
        bad "umoci unpack after build $1: $(tail -c 300 "$T/umoci.err")"
    fi
}

build 1
D1=$D ID1=$RAN
[ -n "$ID1" ] && [ "$IN" = "$ID1" ] && ok || bad "first build: layer holds the printed id ($IN vs $ID1)"

# Unchanged rebuild: cached, same digest, nothing packed.
last_commit() { ls -t "$KILN_DATA"/events/push/*.log | head -1; }
c1=$(last_commit)
build 2
[ -z "$RAN" ] && [ "$D" = "$D1" ] && [ "$IN" = "$ID1" ] && ok || bad "unchanged rebuild: cached, same digest"
c2=$(last_commit)
[ "$c2" != "$c1" ] && ! grep -aq packing "$c2" && ok || bad "unchanged rebuild packed a layer"

# Prune the builder's steps (the tag keeps the old blob in the store), rebuild.
expect_rc 0 "prune" kiln prune
build 3
[ -n "$RAN" ] && [ "$RAN" != "$ID1" ] && ok || bad "after prune the RUN ran again (printed '$RAN')"
[ "$IN" = "$RAN" ] && ok || bad "after prune the layer holds the id the RUN printed ($RAN), not $IN (first build: $ID1)"
[ "$D" != "$D1" ] && ok || bad "after prune the image digest changed"
c3=$(last_commit)
grep -aq packing "$c3" && ok || bad "after prune the new step was packed"

# And the new step is cached again as itself.
D3=$D ID3=$RAN
build 4
[ -z "$RAN" ] && [ "$D" = "$D3" ] && [ "$IN" = "$ID3" ] && ok || bad "rebuild after the prune: cached, same digest"

finish
