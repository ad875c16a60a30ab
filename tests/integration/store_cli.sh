#!/usr/bin/env bash
# The image store through the CLI and kiln-pusher, checked with outside tools:
# import (dir, tar.gz, OCI layout), images, tag, inspect, export (oci:, oci-archive:),
# rmi, prune; skopeo and umoci read the store and the exports; bad input fails
# cleanly and changes nothing.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}"
for t in skopeo umoci jq busybox; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
check() { local d=$1; shift; if "$@" >/dev/null 2>&1; then ok; else bad "$d"; fi; }

T=$(mktemp -d /tmp/kiln-store-XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }
STORE=$KILN_DATA/store

# A small root filesystem from busybox-static.
R=$T/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/tmp"
cp "$(command -v busybox)" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo hello > "$R/etc/motd"
chmod 1777 "$R/tmp"
tar -C "$R" -czf "$T/rootfs.tar.gz" .

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PID=$!
for _ in $(seq 100); do kiln status >/dev/null 2>&1; [ -S "$KILN_DATA/run/pusher.sock" ] && break; sleep 0.05; done

expect_rc 0 "import dir" kiln import --quiet "$R" busybox:dir
D1=$(cat "$T/out")
[[ "$D1" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "import prints a digest ($D1)"
expect_rc 0 "import tar.gz" kiln import --quiet "$T/rootfs.tar.gz" localhost:5000/team/bb:gz
D2=$(cat "$T/out")
[[ "$D2" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "tarball import prints a digest"
expect_rc 0 "import again is stable" kiln import --quiet "$R" busybox:dir2

expect_rc 0 "images --json" kiln images --json
[ "$(jq '.images | length' "$T/out")" = 3 ] && ok || bad "three images listed"
[ "$(jq -r '.images[] | select(.ref=="busybox:dir") | .digest' "$T/out")" = "$D1" ] && ok || bad "images shows digest"

# Outside tools read the store directly.
check "skopeo inspect oci:store:busybox:dir" skopeo inspect "oci:$STORE:busybox:dir"
[ "$(skopeo inspect "oci:$STORE:busybox:dir" | jq -r .Digest)" = "$D1" ] && ok || bad "skopeo sees the same digest"
check "skopeo copy oci: -> dir:" skopeo copy "oci:$STORE:busybox:dir" "dir:$T/skopeo-dir"
check "umoci unpack" umoci unpack --image "$STORE:busybox:dir" "$T/bundle"
cmp -s "$T/bundle/rootfs/etc/motd" "$R/etc/motd" && ok || bad "umoci unpack reproduces /etc/motd"
[ "$(stat -c %a "$T/bundle/rootfs/tmp")" = 1777 ] && ok || bad "sticky /tmp mode kept"
[ "$(readlink "$T/bundle/rootfs/bin/sh")" = busybox ] && ok || bad "symlink kept"
layer=$(jq -r '.manifest.layers[0].digest' < <(kiln inspect busybox:dir))
diffid=$(jq -r '.config.rootfs.diff_ids[0]' < <(kiln inspect busybox:dir))
blob=$STORE/blobs/sha256/${layer#sha256:}
check "gzip -t on the layer" gzip -t "$blob"
[ "sha256:$(gzip -dc "$blob" | sha256sum | cut -d' ' -f1)" = "$diffid" ] && ok || bad "DiffID = sha256(gunzip(blob))"

# Tags are metadata; the fully qualified form names the same image.
# history: one entry per config history record, layers matched in order.
expect_rc 0 "history --json" kiln history --json busybox:dir
[ "$(jq 'length' "$T/out")" = "$(kiln inspect busybox:dir | jq '.config.history | length')" ] && ok || bad "history has every entry"
[ "$(jq -r '[.[] | select(.layer)] | .[0].layer' "$T/out")" = "$layer" ] && ok || bad "history names the layer"
expect_rc 0 "history table" kiln history busybox:dir
grep -q "^LAYER" "$T/out" && grep -q "${layer:7:12}" "$T/out" && grep -q 'kiln import' "$T/out" && ok || bad "history table ($(cat "$T/out"))"
expect_rc 1 "history of an unknown image" kiln history nothere:1
expect_rc 2 "history without a ref" kiln history
expect_rc 0 "tag" kiln tag busybox:dir app:1
expect_rc 0 "inspect familiar" kiln inspect app:1
[ "$(jq -r .digest "$T/out")" = "$D1" ] && ok || bad "tag points at the same digest"
expect_rc 0 "inspect fully qualified" kiln inspect docker.io/library/app:1
[ "$(jq -r .digest "$T/out")" = "$D1" ] && ok || bad "docker.io/library/app:1 is app:1"
expect_rc 0 "inspect by digest" kiln inspect "$D1"

# Export both ways and read them back with skopeo; round trip through import.
expect_rc 0 "export oci:" kiln export app:1 "oci:$T/exp"
check "skopeo reads oci export" skopeo inspect "oci:$T/exp:app:1"
expect_rc 0 "export oci-archive:" kiln export app:1 "oci-archive:$T/app.tar"
[ "$(skopeo inspect "oci-archive:$T/app.tar" | jq -r .Digest)" = "$D1" ] && ok || bad "oci-archive digest"
expect_rc 1 "export into a non-empty dir" kiln export app:1 "oci:$T/exp"
expect_rc 0 "import OCI layout" kiln import --quiet "$T/exp" again:1
[ "$(cat "$T/out")" = "$D1" ] && ok || bad "layout import keeps the digest"

# Bad input: clear errors, store unchanged.
cp "$STORE/index.json" "$T/index.before"
expect_rc 2 "invalid reference (a usage error, refused before anything is sent)" kiln tag app:1 'Bad/UPPER:tag'
grep -qi 'invalid\|reference' "$T/err" && ok || bad "invalid reference message"
expect_rc 1 "unknown image" kiln inspect nosuch:1
expect_rc 1 "import of missing path" kiln import /nonexistent-kiln x:1
expect_rc 2 "export target scheme" kiln export app:1 "docker://x"
expect_rc 2 "import bad ref (a usage error)" kiln import --quiet "$R" '../../etc:1'
printf 'not a tar' > "$T/junk.tar"
expect_rc 1 "import of a non-tar file" kiln import --quiet "$T/junk.tar" junk:1
# A name climbing above the root is refused (relative, and as a hard link).
python3 - "$T" <<'PY'
import io, sys, tarfile
def tar(path, entries):
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, arg in entries:
            i = tarfile.TarInfo(name)
            if kind == "dir":
                i.type, i.mode = tarfile.DIRTYPE, 0o755
                t.addfile(i)
            elif kind == "link":
                i.type, i.linkname = tarfile.LNKTYPE, arg
                t.addfile(i)
            else:
                i.size, i.mode = len(arg), 0o644
                t.addfile(i, io.BytesIO(arg))
d = sys.argv[1]
tar(d + "/climb.tar", [("etc", "dir", None), ("../escape", "file", b"x")])
tar(d + "/climb-link.tar", [("etc", "dir", None), ("etc/l", "link", "../../etc/shadow")])
# Names as umoci and other tools write them: the root as "/", absolute names.
tar(d + "/abs.tar", [("/", "dir", None), ("/etc", "dir", None),
                     ("/etc/motd", "file", b"absolute\n"), ("/../../etc/issue", "file", b"up\n"),
                     ("/etc/motd.link", "link", "/etc/motd")])
PY
expect_rc 1 "import of a tar climbing above its root" kiln import --quiet "$T/climb.tar" climb:1
grep -q 'leaves the root' "$T/err" && ok || bad "the refusal says why ($(cat "$T/err"))"
expect_rc 1 "import of a hard link climbing above the root" kiln import --quiet "$T/climb-link.tar" climb:2
cmp -s "$STORE/index.json" "$T/index.before" && ok || bad "index.json unchanged by failures"
expect_rc 0 "import of a tar with absolute names" kiln import --quiet "$T/abs.tar" abs:1
check "umoci unpacks it" umoci unpack --image "$STORE:abs:1" "$T/abs-bundle"
[ "$(cat "$T/abs-bundle/rootfs/etc/motd" 2>/dev/null)" = absolute ] && ok || bad "/etc/motd lands in the root"
[ "$(cat "$T/abs-bundle/rootfs/etc/issue" 2>/dev/null)" = up ] && ok || bad "/../../etc/issue stays in the root"
[ "$(stat -c %i "$T/abs-bundle/rootfs/etc/motd")" = "$(stat -c %i "$T/abs-bundle/rootfs/etc/motd.link" 2>/dev/null)" ] \
    && ok || bad "the absolute hard link points at /etc/motd"
kiln rmi abs:1 >/dev/null

# rmi and prune: blobs of a removed image go only when nothing else uses them.
expect_rc 0 "rmi" kiln rmi localhost:5000/team/bb:gz
expect_rc 1 "rmi again" kiln rmi localhost:5000/team/bb:gz
expect_rc 0 "prune" kiln prune --store-only
check "skopeo still reads app:1 after prune" skopeo inspect "oci:$STORE:app:1"
expect_rc 0 "images after prune" kiln images --json
jq -e '.images[] | select(.ref=="localhost:5000/team/bb:gz")' "$T/out" >/dev/null && bad "removed tag listed" || ok

kill -TERM "$PID"; wait "$PID"; rc=$?; PID=
[ "$rc" -eq 0 ] && ok || bad "pusher exit $rc"
finish
