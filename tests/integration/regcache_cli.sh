#!/usr/bin/env bash
# kiln build --cache-to / --cache-from: the step cache shared through a real
# docker-registry (htpasswd auth, credentials from the CLI's --authfile).
# Builder A builds and exports its cache; builder B, on an empty data dir,
# builds the same context from that cache: no RUN runs (their counter in a
# RUN --mount=type=cache dir of B's data dir stays absent) and the image digest
# is A's.  Builder C, also empty, builds a context with one COPY source
# changed: the RUN before it comes from the cache, the COPY and the RUN after
# it run.  A missing cache ref is only a warning; the password appears in no
# log, event log or output.  Needs root (namespaces, overlay).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
for t in skopeo jq busybox docker-registry curl htpasswd; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-regcache-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
unset SOURCE_DATE_EPOCH # the records carry the steps' times: digests match without it
SECRET=regcache-$RANDOM-pw-$RANDOM
# kiln ON ARGS...: the CLI against builder ON (a, b or c).
kiln() { local on=$1; shift; env -u REGISTRY_AUTH_FILE -u DOCKER_CONFIG HOME="$T/home" KILN_DATA="$T/$on" "$KILN_CLI_BIN" "$@"; }
mkdir -p "$T/home"

P=$(free_port)
R=127.0.0.1:$P
htpasswd -Bbn alice "$SECRET" > "$T/htpasswd"
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry } }
auth: { htpasswd: { realm: kiln-test, path: $T/htpasswd } }
http: { addr: $R }
CFG
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$R" "$(printf 'alice:%s' "$SECRET" | base64 -w0)" > "$T/auth.json"
AUTH=(--tls-verify=false --authfile "$T/auth.json")

# services ON: a pusher and a builder on their own data dir $T/ON.
services() {
    KILN_DATA="$T/$1" "$KILN_PUSHER_BIN" 2>"$T/pusher-$1.log" & PIDS+=($!)
    KILN_DATA="$T/$1" "$KILN_BUILDER_BIN" 2>"$T/builder-$1.log" & PIDS+=($!)
    for _ in $(seq 100); do kiln "$1" status >/dev/null 2>&1 && curl -s "http://$R/v2/" >/dev/null && return 0; sleep 0.1; done
    return 1
}
services a || bad "services of A start"
kiln a status --json > "$T/status.json" 2>/dev/null
if ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: $(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")"
    exit 77
fi

# The base, in the registry: every builder pulls it from there.
busybox_rootfs "$T/busybox"
expect_rc 0 "import busybox" kiln a import --quiet "$T/busybox" busybox:local
expect_rc 0 "push the base" kiln a push "${AUTH[@]}" busybox:local "$R/base/busybox:1"

mkdir -p "$T/ctx"
cat > "$T/ctx/Dockerfile" <<DF
FROM $R/base/busybox:1
RUN --mount=type=cache,target=/c echo run1 >> /c/count && echo one > /one
COPY a.txt /a.txt
RUN --mount=type=cache,target=/c echo run2 >> /c/count && cat /one /a.txt > /two
ENV GREETING=hi
CMD ["cat", "/two"]
DF
echo first > "$T/ctx/a.txt"
count() { cat "$T/$1"/cache-mounts/*/data/count 2>/dev/null | tr '\n' ' '; }

# ---- A: build and export ----------------------------------------------------
expect_rc 0 "A builds with --cache-to" kiln a build --progress=plain "${AUTH[@]}" -t app:1 \
    --cache-to "type=registry,ref=$R/cache/app:1,mode=max" "$T/ctx"
DA=$(tail -1 "$T/out")
[[ "$DA" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "A printed a digest ($DA)"
[ "$(count a)" = "run1 run2 " ] && ok || bad "A ran both RUNs ($(count a))"
skopeo inspect --raw --tls-verify=false --creds "alice:$SECRET" "docker://$R/cache/app:1" > "$T/cache.json" 2>"$T/err" \
    && ok || bad "skopeo reads the cache manifest ($(tail -c 300 "$T/err"))"
[ "$(jq -r .config.mediaType "$T/cache.json")" = application/vnd.kiln.cache.config.v1+json ] && ok || bad "cache config media type"
[ "$(jq '.layers | length' "$T/cache.json")" = 3 ] && ok || bad "the cache holds the 3 layers ($(jq -c .layers "$T/cache.json"))"
skopeo inspect --raw --tls-verify=false "oci:$T/a/store:app:1" > "$T/a-manifest.json" 2>/dev/null
[ "$(jq -c '[.layers[1:][].digest]' "$T/a-manifest.json")" = "$(jq -c '[.layers[].digest]' "$T/cache.json")" ] \
    && ok || bad "the cache's layers are the image's own blobs"

# ---- B: empty data dir, everything from the cache ---------------------------
services b || bad "services of B start"
expect_rc 0 "B builds with --cache-from" kiln b build --progress=plain "${AUTH[@]}" -t app:1 \
    --cache-from "type=registry,ref=$R/cache/app:1" "$T/ctx"
DB=$(tail -1 "$T/out")
[ "$DB" = "$DA" ] && ok || bad "B's image digest $DB is A's $DA"
[ -z "$(count b)" ] && ok || bad "no RUN ran on B ($(count b))"
[ "$(grep -c 'CACHED (registry)' "$T/err")" = 5 ] && ok || bad "B marks its 5 steps CACHED (registry)"
expect_rc 0 "B's events" kiln b build --progress=json "${AUTH[@]}" -t app:1 "$T/ctx"
[ "$(jq -s '[.[] | select(.completed.build)][0].completed.build.steps_run // 0' "$T/out")" = 0 ] \
    && ok || bad "B's rebuild runs nothing either"

# B's steps are lazy (nothing unpacked): once the store lost their blobs, a
# rebuild without --cache-from runs those steps instead of failing.
expect_rc 0 "B removes the image" kiln b rmi app:1
expect_rc 0 "B's store drops unused blobs" kiln b prune --store-only
expect_rc 0 "B rebuilds without the blobs" kiln b build --progress=plain "${AUTH[@]}" -t app:1 "$T/ctx"
[ -n "$(count b)" ] && ok || bad "B ran the steps whose blobs were gone"
rm -f "$T"/b/cache-mounts/*/data/count

# ---- C: empty data dir, one COPY source changed ------------------------------
services c || bad "services of C start"
cp -r "$T/ctx" "$T/ctx2" && echo second > "$T/ctx2/a.txt"
expect_rc 0 "C builds a changed context with --cache-from" kiln c build --progress=json "${AUTH[@]}" \
    -t app:2 --cache-from "$R/cache/app:1" "$T/ctx2"
[ "$(count c)" = "run2 " ] && ok || bad "C ran only the RUN after the changed COPY ($(count c))"
jq -s -c '[.[] | select(.step_done) | .step_done | {step, cached: (.cached // false), src: (.cache_source // "")}]' \
    "$T/out" > "$T/steps.json"
[ "$(cat "$T/steps.json")" = '[{"step":0,"cached":true,"src":"registry"},{"step":1,"cached":false,"src":""},{"step":2,"cached":false,"src":""},{"step":3,"cached":false,"src":""},{"step":4,"cached":false,"src":""}]' ] \
    && ok || bad "C: the first RUN from the registry, the rest ran ($(cat "$T/steps.json"))"

# ---- mode=max carries the other stages' records, mode=min only the final chain
mkdir -p "$T/ms"
cat > "$T/ms/Dockerfile" <<DF
FROM $R/base/busybox:1 AS build
RUN --mount=type=cache,target=/c echo stage >> /c/count && echo built > /built
FROM $R/base/busybox:1
COPY --from=build /built /built
DF
expect_rc 0 "A exports a two-stage build, mode=max" kiln a build --progress=plain "${AUTH[@]}" -t ms:1 \
    --cache-to "type=registry,ref=$R/cache/ms:max,mode=max" "$T/ms"
DM=$(tail -1 "$T/out")
expect_rc 0 "A exports it, mode=min" kiln a build --progress=plain "${AUTH[@]}" -t ms:1 \
    --cache-to "type=registry,ref=$R/cache/ms:min" "$T/ms"
expect_rc 0 "B builds it from the max cache" kiln b build --progress=plain "${AUTH[@]}" -t ms:1 \
    --cache-from "$R/cache/ms:max" "$T/ms"
[ "$(tail -1 "$T/out")" = "$DM" ] && ok || bad "B's two-stage image is A's"
[ -z "$(count b)" ] && ok || bad "with mode=max the build stage's RUN did not run on B ($(count b))"
expect_rc 0 "C builds it from the min cache" kiln c build --progress=plain "${AUTH[@]}" -t ms:1 \
    --cache-from "$R/cache/ms:min" "$T/ms"
[ "$(tail -1 "$T/out")" = "$DM" ] && ok || bad "C's two-stage image is A's"
[ "$(count c)" = "run2 stage " ] && ok || bad "with mode=min the build stage's RUN ran on C ($(count c))"

# ---- a missing cache ref is a warning -----------------------------------------
expect_rc 0 "a missing --cache-from only warns" kiln c build --progress=plain "${AUTH[@]}" -t app:3 \
    --cache-from "type=registry,ref=$R/cache/nope:1" "$T/ctx2"
grep -q "warning: cache $R/cache/nope:1 not used" "$T/err" && ok || bad "the warning names the ref ($(tail -c 300 "$T/err"))"
expect_rc 2 "a bad --cache-to is refused" kiln c build --cache-to "type=registry,ref=$R/x:1,mode=all" "$T/ctx2"
expect_rc 2 "an unknown cache type is refused" kiln c build --cache-from "type=gha,ref=x" "$T/ctx2"

# ---- type=local: an OCI layout on the client's side, streamed both ways -----
expect_rc 0 "A exports a local cache" kiln a build --progress=plain "${AUTH[@]}" -t app:1 \
    --cache-to "type=local,dest=$T/lcache" "$T/ctx"
[ "$(tail -1 "$T/out")" = "$DA" ] && ok || bad "stdout still ends with the image digest"
cfg=$(jq -r '.manifests[0].digest' "$T/lcache/index.json" 2>/dev/null | sed 's/sha256://')
[ -n "$cfg" ] && [ "$(jq -r .config.mediaType "$T/lcache/blobs/sha256/$cfg")" = application/vnd.kiln.cache.config.v1+json ] \
    && ok || bad "the local cache is an OCI layout holding the cache manifest"
expect_rc 0 "A exports it again over the old one" kiln a build --progress=plain "${AUTH[@]}" -t app:1 \
    --cache-to "type=local,dest=$T/lcache" "$T/ctx"
[ -z "$(kiln a images 2>/dev/null | grep kiln-cache)" ] && ok || bad "no temporary cache tag left in A's store"
services d || bad "services of D start"
expect_rc 0 "D builds from the local cache" kiln d build --progress=plain "${AUTH[@]}" -t app:1 \
    --cache-from "type=local,src=$T/lcache" "$T/ctx"
[ "$(tail -1 "$T/out")" = "$DA" ] && ok || bad "D's image digest is A's"
[ -z "$(count d)" ] && ok || bad "no RUN ran on D ($(count d))"
[ "$(grep -c 'CACHED (registry)' "$T/err")" = 5 ] && ok || bad "D marks its 5 steps as imported"
[ -z "$(kiln d images 2>/dev/null | grep kiln-cache)" ] && ok || bad "no temporary cache tag left in D's store"
expect_rc 0 "a missing local cache only warns" kiln d build --progress=plain "${AUTH[@]}" -t app:4 \
    --cache-from "type=local,src=$T/nope" "$T/ctx2"
grep -q "warning: --cache-from $T/nope" "$T/err" && ok || bad "the warning names the directory"

# ---- credentials never reach logs or events -----------------------------------
leaks=$(grep -rlaF "$SECRET" "$T"/*.log "$T"/a/events "$T"/b/events "$T"/c/events "$T"/d/events "$T/out" "$T/err" 2>/dev/null)
[ -z "$leaks" ] && ok || bad "the password appears in $leaks"
finish
