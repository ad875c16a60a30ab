#!/usr/bin/env bash
# kiln build's client-side habits from buildx and buildah, end to end through
# both services: the progress mode from $KILN_PROGRESS / $BUILDKIT_PROGRESS,
# --secret id=X,env=VAR (whose value is nowhere in logs, events or the
# image), --annotation, --metadata-file, .containerignore, and --output
# (local, tar, oci) written on the client's side, also by a client that
# reaches the services over tcp:// only.  Needs root (RUN steps).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
for t in skopeo umoci jq busybox tar python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-flags-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
export SOURCE_DATE_EPOCH=1700000000
unset KILN_PROGRESS BUILDKIT_PROGRESS KILN_BUILDER KILN_PUSHER
export XDG_CONFIG_HOME=$T/config # no config file of this machine applies
kiln() { "$KILN_CLI_BIN" "$@"; }

PP=$(free_port) PE=$(free_port) BP=$(free_port) BE=$(free_port)
R=$KILN_DATA/run
mkdir -p "$R"
"$KILN_PUSHER_BIN" --listen "ipc://$R/pusher.sock" --listen "tcp://127.0.0.1:$PP" \
    --events "ipc://$R/pusher-events.sock" --events "tcp://127.0.0.1:$PE" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" --listen "ipc://$R/builder.sock" --listen "tcp://127.0.0.1:$BP" \
    --events "ipc://$R/builder-events.sock" --events "tcp://127.0.0.1:$BE" \
    --pusher "ipc://$R/pusher.sock" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
kiln status --json > "$T/status.json" 2>/dev/null
if ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: $(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")"
    exit 77
fi
busybox_rootfs "$T/busybox"
echo base-only > "$T/busybox/etc/gone.txt"
expect_rc 0 "import busybox" kiln import --quiet "$T/busybox" busybox:flags

# ---- progress from the environment -------------------------------------
C=$T/meta
mkdir -p "$C"
echo one > "$C/a.txt"
printf 'FROM scratch\nCOPY a.txt /a.txt\n' > "$C/Dockerfile"
KILN_PROGRESS=json expect_rc 0 "KILN_PROGRESS=json" kiln build -t flags:p "$C"
jq -e -s 'length > 2 and all(.[]; has("seq"))' "$T/out" >/dev/null && ok || bad "KILN_PROGRESS=json prints events as JSON on stdout ($(head -c 200 "$T/out"))"
BUILDKIT_PROGRESS=quiet expect_rc 0 "BUILDKIT_PROGRESS=quiet" kiln build -t flags:p "$C"
[[ "$(cat "$T/out")" =~ ^sha256:[0-9a-f]{64}$ ]] && [ ! -s "$T/err" ] && ok || bad "BUILDKIT_PROGRESS=quiet: only the digest"
KILN_PROGRESS=plain BUILDKIT_PROGRESS=quiet expect_rc 0 "KILN_PROGRESS wins" kiln build -t flags:p "$C"
grep -q '^#1 ' "$T/err" && ok || bad "KILN_PROGRESS=plain wins over BUILDKIT_PROGRESS ($(head -c 200 "$T/err"))"
KILN_PROGRESS=json expect_rc 0 "--progress wins" kiln build --progress=quiet -t flags:p "$C"
[[ "$(cat "$T/out")" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "--progress wins over KILN_PROGRESS"
KILN_PROGRESS=fancy expect_rc 2 "an invalid KILN_PROGRESS" kiln build -t flags:p "$C"
grep -q 'KILN_PROGRESS' "$T/err" && ok || bad "the error names KILN_PROGRESS ($(cat "$T/err"))"
BUILDKIT_PROGRESS=rainbow expect_rc 2 "an invalid BUILDKIT_PROGRESS" kiln build -t flags:p "$C"
grep -q 'BUILDKIT_PROGRESS' "$T/err" && ok || bad "the error names BUILDKIT_PROGRESS ($(cat "$T/err"))"

# ---- --annotation and --metadata-file --------------------------------------
STORE=$KILN_DATA/store
expect_rc 0 "annotations + metadata" kiln build --progress=plain -t flags:meta -t flags:meta2 \
    --annotation org.example.a=1 --annotation manifest:org.example.b='two words' \
    --metadata-file "$T/meta.json" "$C"
D=$(cat "$T/out")
skopeo inspect --raw "oci:$STORE:flags:meta" > "$T/man.json" 2>/dev/null
jq -e '.annotations["org.example.a"] == "1" and .annotations["org.example.b"] == "two words"' "$T/man.json" >/dev/null \
    && ok || bad "manifest annotations ($(jq -c .annotations "$T/man.json"))"
jq -e --arg d "$D" --arg c "$(jq -r .config.digest "$T/man.json")" \
    '.["containerimage.digest"] == $d and .["containerimage.config.digest"] == $c
     and .["image.name"] == "flags:meta,flags:meta2" and .["containerimage.descriptor"].digest == $d' \
    "$T/meta.json" >/dev/null && ok || bad "metadata file ($(cat "$T/meta.json"))"
[ -f "$KILN_DATA/events/build/$(jq -r '.["kiln.build.id"]' "$T/meta.json").log" ] && ok || bad "kiln.build.id names the build's job"
expect_rc 2 "index: annotation on one platform" kiln build --annotation index:x=y "$C"
expect_rc 2 "annotation without =" kiln build --annotation novalue "$C"

# ---- --secret id=X,env=VAR -------------------------------------------------
S=$T/secret
mkdir -p "$S"
printf 'FROM busybox:flags\nRUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -c1-64 > /tok.sum\n' > "$S/Dockerfile"
TOKEN="kiln-env-secret-$RANDOM$RANDOM-value"
want=$(printf '%s' "$TOKEN" | sha256sum | cut -c1-64)
for mode in local stream; do
    API_TOKEN=$TOKEN expect_rc 0 "env secret ($mode)" kiln build --progress=plain --no-cache \
        --context-transfer=$mode --secret id=tok,env=API_TOKEN -t "flags:secret-$mode" "$S"
    cat "$T/out" "$T/err" >> "$T/cli-output"
    rm -rf "$T/sb"
    umoci unpack --image "$STORE:flags:secret-$mode" "$T/sb" >/dev/null 2>&1
    [ "$(cat "$T/sb/rootfs/tok.sum" 2>/dev/null)" = "$want" ] && ok || bad "RUN read the env secret ($mode)"
    grep -rqF "$TOKEN" "$T/sb" && bad "the secret's value is in the image ($mode)" || ok
done
API_TOKEN=$TOKEN expect_rc 0 "type=env secret" kiln build --progress=plain --no-cache \
    --secret type=env,id=API_TOKEN -t flags:secret-type "$S"
cat "$T/out" "$T/err" >> "$T/cli-output"
sed 's#id=tok #id=tok_env,target=/run/secrets/tok #' "$S/Dockerfile" > "$S/Dockerfile.bare"
tok_env=$TOKEN expect_rc 0 "bare id=VAR secret (set variable)" kiln build --progress=plain --no-cache \
    -f "$S/Dockerfile.bare" --secret id=tok_env -t flags:secret-bare "$S"
cat "$T/out" "$T/err" >> "$T/cli-output"
rm -rf "$T/sb"; umoci unpack --image "$STORE:flags:secret-bare" "$T/sb" >/dev/null 2>&1
[ "$(cat "$T/sb/rootfs/tok.sum" 2>/dev/null)" = "$want" ] && ok || bad "a bare id=VAR takes the set variable"
expect_rc 2 "env secret of an unset variable" env -u NO_SUCH_VAR "$KILN_CLI_BIN" build --secret id=tok,env=NO_SUCH_VAR "$S"
grep -q NO_SUCH_VAR "$T/err" && ok || bad "the error names the variable"
grep -rqF "$TOKEN" "$T/cli-output" "$T"/*.log "$KILN_DATA/events" && bad "the secret's value is in a log or an event" || ok
# Nor anywhere in the data dir once the builds ended (cache keys, snapshots,
# the sandbox's secret files).
grep -rqF "$TOKEN" "$KILN_DATA" && bad "the secret's value is left in the data dir: $(grep -rlF "$TOKEN" "$KILN_DATA" | head -3)" || ok
for d in $(jq -r '.config.digest' <(skopeo inspect --raw "oci:$STORE:flags:secret-stream")); do
    grep -qF "$TOKEN" "$STORE/blobs/sha256/${d#sha256:}" && bad "the secret's value is in the config" || ok
done

# ---- .containerignore ------------------------------------------------------
I=$T/ign
mkdir -p "$I"
for f in a b c d; do echo "$f" > "$I/$f.txt"; done
printf 'a.txt\n' > "$I/.dockerignore"
printf 'b.txt\n' > "$I/.containerignore"
printf 'FROM scratch\nCOPY . /ctx/\n' > "$I/Dockerfile"
printf 'FROM scratch\nCOPY . /ctx/\n' > "$I/Containerfile"
printf 'c.txt\n' > "$I/Containerfile.containerignore"
ls_image() { rm -rf "$T/ib"; umoci unpack --image "$STORE:$1" "$T/ib" >/dev/null 2>&1; (cd "$T/ib/rootfs/ctx" && ls -- *.txt | tr '\n' ' '); }
for mode in local stream; do
    expect_rc 0 ".containerignore ($mode)" kiln build --progress=plain --context-transfer=$mode -t flags:ign "$I"
    [ "$(ls_image flags:ign)" = "a.txt c.txt d.txt " ] && ok || bad ".containerignore preferred over .dockerignore ($mode): $(ls_image flags:ign)"
    expect_rc 0 "Containerfile.containerignore ($mode)" kiln build --progress=plain --context-transfer=$mode \
        -f "$I/Containerfile" -t flags:ign2 "$I"
    [ "$(ls_image flags:ign2)" = "a.txt b.txt d.txt " ] && ok || bad "Containerfile.containerignore wins ($mode): $(ls_image flags:ign2)"
done

# ---- --output ---------------------------------------------------------------
O=$T/outctx
mkdir -p "$O"
echo payload > "$O/p.txt"
printf 'FROM busybox:flags AS b\nRUN mkdir -p /made && echo built > /made/by-run && rm /etc/gone.txt && touch /made/suid && chmod 4755 /made/suid && (mknod /made/dev c 1 3 || true)\nCOPY p.txt /made/\n' > "$O/Dockerfile"
expect_rc 0 "-o DIR without -t" kiln build --progress=plain -o "$T/o-local" "$O"
D=$(cat "$T/out")
[ "$(cat "$T/o-local/made/by-run" 2>/dev/null)" = built ] && [ "$(cat "$T/o-local/made/p.txt" 2>/dev/null)" = payload ] \
    && ok || bad "-o DIR holds the final stage's files"
[ -x "$T/o-local/bin/busybox" ] && [ ! -e "$T/o-local/etc/gone.txt" ] && ok || bad "-o DIR: base files kept, deleted ones gone (whiteouts applied)"
find "$T/o-local" -name '.wh.*' | grep -q . && bad "-o DIR holds whiteout files" || ok
[ "$(stat -c %Y "$T/o-local/made")" = "$(stat -c %Y "$T/o-local/made/p.txt")" ] && ok || bad "-o DIR: a directory keeps its mtime from the layer"
[ "$(stat -c %a "$T/o-local/made/suid" 2>/dev/null)" = 755 ] && [ ! -e "$T/o-local/made/dev" ] \
    && ok || bad "-o DIR: no set-id bit, no device node a RUN step chose ($(ls -l "$T/o-local/made"))"
expect_rc 0 "type=tar" kiln build --progress=plain --output "type=tar,dest=$T/o.tar" "$O"
tar -tf "$T/o.tar" > "$T/tar.list" 2>/dev/null && grep -qx 'made/by-run' "$T/tar.list" && ! grep -q 'etc/gone.txt' "$T/tar.list" \
    && ok || bad "type=tar: a tar of the final stage's files ($(grep made "$T/tar.list" | head -3))"
[ "$(tar -xOf "$T/o.tar" made/p.txt 2>/dev/null)" = payload ] && ok || bad "type=tar: file content"
expect_rc 0 "type=oci" kiln build --progress=plain --output "type=oci,dest=$T/o-oci.tar" "$O"
[ "$(skopeo inspect --raw "oci-archive:$T/o-oci.tar" 2>/dev/null | sha256sum | cut -c1-64)" = "${D#sha256:}" ] \
    && ok || bad "type=oci: an OCI archive of the image skopeo reads ($D)"
expect_rc 2 "unknown output type" kiln build --output type=registry,dest=x "$O"
expect_rc 2 "output without dest" kiln build --output type=tar "$O"

# With a pool of builders the image is in the node's store, whose pusher the
# client does not know: refused, saying so, before the context is sent.
expect_rc 2 "--output with a pool" kiln --builder "ipc://$R/builder.sock,tcp://127.0.0.1:$BP" \
    build --progress=plain -o "$T/o-pool" "$O"
grep -q 'pool of builders' "$T/err" && [ ! -e "$T/o-pool" ] && ok || bad "--output with a pool is refused ($(cat "$T/err"))"

# A remote client (tcp:// only) gets its output written on its side.
RK=(kiln --builder "tcp://127.0.0.1:$BP" --pusher "tcp://127.0.0.1:$PP")
expect_rc 0 "remote -o" "${RK[@]}" build --progress=plain --output "type=local,dest=$T/o-remote" "$O"
[ "$(cat "$T/o-remote/made/p.txt" 2>/dev/null)" = payload ] && ok || bad "remote client: output written on the client"
grep -q '^context:' "$T/err" && ok || bad "remote client streamed its context"
expect_rc 0 "remote type=oci" "${RK[@]}" build --progress=quiet --output "type=oci,dest=$T/o-remote.tar" "$O"
skopeo inspect "oci-archive:$T/o-remote.tar" >/dev/null 2>&1 && ok || bad "remote type=oci archive"

# ---- --build-context ---------------------------------------------------------
N=$T/named
mkdir -p "$N/sub" "$T/nctx"
echo from-named > "$N/sub/n.txt"
printf 'FROM alpine AS a\nRUN busybox test -x /bin/busybox && echo ran > /ran\nFROM scratch\nCOPY --from=a /ran /ran\nCOPY --from=extra sub/n.txt /n.txt\n' > "$T/nctx/Dockerfile"
expect_rc 0 "named contexts (image + dir)" kiln build --progress=plain -t flags:named \
    --build-context alpine=docker-image://busybox:flags --build-context extra="$N" "$T/nctx"
rm -rf "$T/nb"; umoci unpack --image "$STORE:flags:named" "$T/nb" >/dev/null 2>&1
[ "$(cat "$T/nb/rootfs/ran" 2>/dev/null)" = ran ] && ok || bad "FROM NAME=docker-image:// used the image"
[ "$(cat "$T/nb/rootfs/n.txt" 2>/dev/null)" = from-named ] && ok || bad "COPY --from=NAME read the named directory"
expect_rc 0 "named contexts, unchanged" kiln build --progress=plain -t flags:named \
    --build-context alpine=docker-image://busybox:flags --build-context extra="$N" "$T/nctx"
[ "$(grep -c ' CACHED' "$T/err")" -ge 3 ] && ok || bad "an unchanged named directory keeps the cache ($(grep -c CACHED "$T/err"))"
echo changed > "$N/sub/n.txt"
printf 'FROM extra\nLABEL named=yes\n' > "$T/nctx/Dockerfile.from"
expect_rc 0 "FROM a named directory, remote client" "${RK[@]}" build --progress=plain \
    -f "$T/nctx/Dockerfile.from" --build-context extra="$N" -o "$T/o-named" "$T/nctx"
[ "$(cat "$T/o-named/sub/n.txt" 2>/dev/null)" = changed ] && ok || bad "FROM NAME=DIR starts from the directory's files"
expect_rc 2 "a bad --build-context" kiln build --build-context 'x=https://example.invalid/a.git' "$T/nctx"
expect_rc 2 "a --build-context without =" kiln build --build-context nodir "$T/nctx"
expect_rc 2 "--pull with a named directory" kiln build --pull --build-context extra="$N" "$T/nctx"

finish
