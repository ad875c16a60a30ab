#!/usr/bin/env bash
# kiln import of image archives: what `kiln export … oci-archive:F`, skopeo
# (oci-archive:, docker-archive:) and `docker save` write is imported as the
# image it holds, with the same manifest (or config and layers), never as a
# rootfs whose layer holds oci-layout, index.json and blobs/.  Checked with
# skopeo and umoci.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}"
for t in skopeo umoci jq busybox tar; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-import-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
STORE=$KILN_DATA/store
kiln() { "$KILN_CLI_BIN" "$@"; }

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status --json 2>/dev/null | jq -e .pusher.reachable >/dev/null && break; sleep 0.1; done

mkdir -p "$T/rootfs/bin" "$T/rootfs/etc"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
echo marker >"$T/rootfs/etc/marker"
expect_rc 0 "import a rootfs" kiln import --quiet "$T/rootfs" app:1
D=$(cat "$T/out")
CFG=$(skopeo inspect --raw "oci:$STORE:app:1" | jq -r .config.digest)

# unpacked REF: the image's rootfs is the one imported, no layout files in it
unpacked() {
    rm -rf "$T/bundle"
    umoci unpack --image "$STORE:$1" "$T/bundle" >/dev/null 2>&1 &&
        [ -f "$T/bundle/rootfs/bin/busybox" ] && [ "$(cat "$T/bundle/rootfs/etc/marker")" = marker ] &&
        [ ! -e "$T/bundle/rootfs/oci-layout" ] && [ ! -e "$T/bundle/rootfs/index.json" ] && [ ! -e "$T/bundle/rootfs/blobs" ]
}

# kiln's own oci-archive, with and without the transport prefix.
expect_rc 0 "export oci-archive" kiln export app:1 "oci-archive:$T/app.tar"
expect_rc 0 "import the oci-archive" kiln import --quiet "$T/app.tar" back:1
[ "$(cat "$T/out")" = "$D" ] && ok || bad "oci-archive imported as the same manifest ($(cat "$T/out") vs $D)"
[ "$(skopeo inspect --raw "oci:$STORE:back:1" | jq -r .config.digest)" = "$CFG" ] && ok || bad "skopeo: same config"
unpacked back:1 && ok || bad "umoci: the imported image is the rootfs, not the layout"
expect_rc 0 "import oci-archive:FILE" kiln import --quiet "oci-archive:$T/app.tar" back:2
[ "$(cat "$T/out")" = "$D" ] && ok || bad "oci-archive: prefix"

# A layout directory, with the oci: prefix.
expect_rc 0 "export oci:DIR" kiln export app:1 "oci:$T/layout"
expect_rc 0 "import oci:DIR" kiln import --quiet "oci:$T/layout" back:3
[ "$(cat "$T/out")" = "$D" ] && ok || bad "oci: prefix"

# skopeo's oci-archive (another writer) and docker-archive (docker save's format).
expect_rc 0 "skopeo oci-archive" skopeo copy "oci:$STORE:app:1" "oci-archive:$T/sk.tar:app:1"
expect_rc 0 "import skopeo's oci-archive" kiln import --quiet "$T/sk.tar" sk:1
unpacked sk:1 && ok || bad "skopeo's oci-archive: rootfs"
expect_rc 0 "skopeo docker-archive" skopeo copy "oci:$STORE:app:1" "docker-archive:$T/docker.tar:app:1"
expect_rc 0 "import a docker-archive" kiln import --quiet "$T/docker.tar" dock:1
unpacked dock:1 && ok || bad "docker-archive: rootfs"
skopeo inspect --raw --config "oci:$STORE:dock:1" | jq -e '.rootfs.diff_ids | length == 1' >/dev/null && ok || bad "docker-archive: config kept"
[ "$(skopeo inspect --raw --config "oci:$STORE:dock:1" | jq -r '.rootfs.diff_ids[0]')" = \
  "$(skopeo inspect --raw --config "oci:$STORE:app:1" | jq -r '.rootfs.diff_ids[0]')" ] && ok || bad "docker-archive: same diff_id"
expect_rc 0 "import docker-archive:FILE" kiln import --quiet "docker-archive:$T/docker.tar" dock:2
[ "$(jq -r '.images[] | select(.ref=="dock:2") | .architecture' < <(kiln images --json))" = \
  "$(jq -r '.images[] | select(.ref=="app:1") | .architecture' < <(kiln images --json))" ] && ok || bad "docker-archive: platform from the config"

# The archives' other files (docker save's per-layer json, index.json) are
# not images: nothing untagged is listed.
expect_rc 0 "images" kiln images
grep -q '^<none>' "$T/out" && bad "an archive's metadata listed as an image: $(cat "$T/out")" || ok

# A rootfs tar is still a rootfs; a prefix that does not fit is an error.
tar -C "$T/rootfs" -cf "$T/rootfs.tar" .
expect_rc 0 "import a rootfs tar" kiln import --quiet "$T/rootfs.tar" plain:1
unpacked plain:1 && ok || bad "rootfs tar: rootfs"
# A rootfs that happens to have manifest.json / index.json / oci-layout at its top.
mkdir -p "$T/odd" && cp -r "$T/rootfs/." "$T/odd/"
echo '{"name": "an app manifest"}' >"$T/odd/manifest.json"
echo '{"not": "an index"}' >"$T/odd/index.json"
echo 'just a file' >"$T/odd/oci-layout"
tar -C "$T/odd" -cf "$T/odd.tar" .
expect_rc 0 "import a rootfs tar with manifest.json at its top" kiln import --quiet "$T/odd.tar" odd:1
rm -rf "$T/bundle"
umoci unpack --image "$KILN_DATA/store:odd:1" "$T/bundle" >/dev/null 2>&1 && [ -f "$T/bundle/rootfs/manifest.json" ] \
    && [ -f "$T/bundle/rootfs/bin/busybox" ] && ok || bad "a rootfs with manifest.json stays a rootfs"
expect_rc 1 "oci-archive: of a rootfs tar" kiln import --quiet "oci-archive:$T/rootfs.tar" no:1
grep -q 'not an oci-archive' "$T/err" && ok || bad "says it is not an oci-archive: $(cat "$T/err")"
expect_rc 1 "oci: of a rootfs dir" kiln import --quiet "oci:$T/rootfs" no:2
# A tampered blob in an archive: nothing tagged.
mkdir -p "$T/bad" && tar -C "$T/bad" -xf "$T/app.tar"
blob=$(find "$T/bad/blobs/sha256" -type f -size +100k | head -1)
printf 'X' | dd of="$blob" bs=1 seek=100 conv=notrunc 2>/dev/null
tar -C "$T/bad" -cf "$T/bad.tar" .
expect_rc 1 "import of an archive with a corrupt blob" kiln import --quiet "$T/bad.tar" bad:1
kiln inspect bad:1 >/dev/null 2>&1 && bad "a corrupt archive was tagged" || ok
finish
