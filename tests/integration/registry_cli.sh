#!/usr/bin/env bash
# kiln push / pull / manifest through kiln-pusher against a real docker-registry
# on 127.0.0.1, checked with skopeo and curl on the registry API.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}"
for t in docker-registry skopeo jq curl busybox; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-reg-cli-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

PORT=$(free_port)
R=127.0.0.1:$PORT
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry }, delete: { enabled: true } }
http: { addr: $R }
CFG
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
for _ in $(seq 100); do
    curl -fs "http://$R/v2/" >/dev/null && kiln status >/dev/null 2>&1 && break
    kiln status --json 2>/dev/null | jq -e .pusher.reachable >/dev/null && curl -fs "http://$R/v2/" >/dev/null && break
    sleep 0.1
done

mkdir -p "$T/rootfs/bin" "$T/rootfs/etc"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
echo one > "$T/rootfs/etc/one"
expect_rc 0 "import" kiln import --quiet "$T/rootfs" app:1
D=$(cat "$T/out")

expect_rc 0 "push" kiln push --tls-verify=false app:1 "$R/team/app:1"
[ "$(cat "$T/out")" = "$D" ] && ok || bad "push prints the manifest digest"
[ "$(skopeo inspect --tls-verify=false "docker://$R/team/app:1" | jq -r .Digest)" = "$D" ] && ok || bad "skopeo sees the pushed digest"
[ "$(curl -fsI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/team/app/manifests/1" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')" = "$D" ] && ok || bad "registry API serves the same manifest digest"
expect_rc 0 "re-push" kiln push --tls-verify=false --json app:1 "$R/team/app:1"
[ "$(jq -s '[.[] | select(.blob.kind=="SKIPPED")] | length' "$T/out")" = 2 ] && ok || bad "re-push skips both blobs"
[ "$(jq -s '[.[] | select(.blob.kind=="DONE")] | length' "$T/out")" = 0 ] && ok || bad "re-push uploads nothing"
expect_rc 0 "push to another repository" kiln push --tls-verify=false --json app:1 "$R/other/app:1"
[ "$(jq -s '[.[] | select(.blob.kind=="MOUNTED")] | length' "$T/out")" = 2 ] && ok || bad "second repository gets blobs by mount"
expect_rc 0 "skopeo copy of the push" skopeo copy --src-tls-verify=false "docker://$R/other/app:1" "oci:$T/copy:app"

# Pull into an empty store.
expect_rc 0 "rmi" kiln rmi app:1
expect_rc 0 "prune" kiln prune --store-only
expect_rc 0 "pull" kiln pull --tls-verify=false "$R/team/app:1"
[ "$(cat "$T/out")" = "$D" ] && ok || bad "pull gives the same digest"
expect_rc 0 "inspect pulled" kiln inspect "$R/team/app:1"
expect_rc 0 "pull again" kiln pull --tls-verify=false --json "$R/team/app:1"
grep -q '"blobs_present"\|0 blob(s) fetched' "$T/out" "$T/err" || jq -s -e '[.[] | select(.completed)][0].completed.summary | test("0 blob\\(s\\) fetched")' "$T/out" >/dev/null && ok || bad "second pull fetches nothing"

# A manifest list, pushed and read back.
L=$R/team/multi:1
expect_rc 0 "manifest create" kiln manifest create "$L"
expect_rc 1 "manifest create twice" kiln manifest create "$L"
expect_rc 0 "manifest add" kiln manifest add "$L" "$R/team/app:1"
expect_rc 0 "manifest annotate" kiln manifest annotate --variant v2 --annotation org.example=x "$L" "$D"
expect_rc 0 "manifest inspect" kiln manifest inspect "$L"
[ "$(jq -r '.manifests[0].platform.variant' "$T/out")" = v2 ] && ok || bad "annotate set the variant"
expect_rc 0 "manifest push" kiln manifest push --tls-verify=false "$L"
skopeo inspect --raw --tls-verify=false "docker://$L" >"$T/index.json" 2>"$T/err" && ok || bad "skopeo reads the index"
[ "$(jq -r .mediaType "$T/index.json")" = application/vnd.oci.image.index.v1+json ] && ok || bad "pushed an OCI index"
for d in $(jq -r '.manifests[].digest' "$T/index.json"); do
    curl -fsI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/team/multi/manifests/$d" >/dev/null && ok || bad "index entry $d resolves"
done

# Failures: exit 5 for registry trouble, clear messages, nothing tagged.
CLOSED=$(free_port)
expect_rc 5 "push to a closed port" kiln push --tls-verify=false "$R/team/app:1" "127.0.0.1:$CLOSED/x/y:1"
expect_rc 5 "pull of a missing image" kiln pull --tls-verify=false "$R/team/nope:1"
expect_rc 1 "push of an image not in the store" kiln push --tls-verify=false nosuch:1 "$R/x/y:1"
expect_rc 2 "bad reference (refused before anything is sent)" kiln pull --tls-verify=false 'UPPER/Case:1'
expect_rc 2 "bad --creds" kiln pull --creds nocolon "$R/team/app:1"
# 0.0.0.0 reaches the same listener under a name that is not loopback's
# (loopback registries may speak plain HTTP, as Docker allows).
expect_rc 5 "TLS verification on by default" kiln pull "0.0.0.0:$PORT/team/app:1"
kiln images --json | jq -e '.images[] | select(.ref | test("nope|x/y"))' >/dev/null && bad "failed jobs tagged something" || ok
kiln push --tls-verify=false --creds 'alice:s3cret-value' app:1 "127.0.0.1:$CLOSED/x/y:1" >/dev/null 2>"$T/err"
grep -q 's3cret-value' "$T/err" "$T/pusher.log" "$KILN_DATA"/events/push/*.log && bad "credentials leaked into output, logs or events" || ok

finish
