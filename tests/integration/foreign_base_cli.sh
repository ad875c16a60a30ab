#!/usr/bin/env bash
# Base images whose layers other tools wrote, built on by Kiln: the root
# entry written as "/" (umoci insert), every name absolute ("/etc/passwd",
# and one "/../../etc/…" that must stay inside), and "./" names (GNU tar).
# Each is made with umoci, pushed with skopeo to a docker-registry on
# 127.0.0.1, pulled by `kiln build` as its FROM, and the result unpacked by
# umoci must hold the base's files exactly as umoci unpacks the base itself,
# plus what the RUN wrote.  Needs root (RUN sandbox).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
for t in docker-registry skopeo umoci jq curl busybox python3 tar sha256sum; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-foreign-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

PORT=$(free_port)
REG=127.0.0.1:$PORT
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry } }
http: { addr: $REG }
CFG
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do
    curl -fs "http://$REG/v2/" >/dev/null && kiln status >/dev/null 2>&1 && break
    sleep 0.1
done
kiln status --json > "$T/status.json" 2>/dev/null
if ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: $(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")"
    exit 77
fi

# The base's files: busybox with a few applets, passwd, a sticky tmp.
B=$T/rootfs
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/usr/share/doc"
cp "$(command -v busybox)" "$B/bin/busybox"
for a in sh cat echo; do ln -s busybox "$B/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$B/etc/passwd"
printf 'root:x:0:\n' > "$B/etc/group"
printf 'made by another tool\n' > "$B/usr/share/doc/README"
chmod 1777 "$B/tmp"
chmod 0751 "$B/usr"
climb=kiln-climbed-$$

umoci init --layout "$T/oci" >/dev/null
# 1. umoci insert of a directory at "/": the layer's root entry is named "/".
umoci new --image "$T/oci:umoci" && umoci insert --image "$T/oci:umoci" "$B" / >/dev/null ||
    bad "umoci insert"
# 2. Every name absolute, the root "/", and a name climbing above the root.
python3 - "$B" "$T/abs.tar" "$climb" <<'PY'
import io, os, sys, tarfile
src, out, climb = sys.argv[1:]
def add(t, path, name):  # gettarinfo strips a leading "/": set the name after it
    ti = t.gettarinfo(path)
    ti.name = name
    if ti.isreg():
        with open(path, "rb") as f:
            t.addfile(ti, f)
    else:
        t.addfile(ti)
with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
    add(t, src, "/")
    for d, dirs, files in os.walk(src):
        dirs.sort()
        for n in sorted(dirs) + sorted(files):
            p = os.path.join(d, n)
            add(t, p, "/" + os.path.relpath(p, src))
    data = b"climbed\n"
    ti = tarfile.TarInfo("/../../etc/" + climb)
    ti.size, ti.mode = len(data), 0o640
    t.addfile(ti, io.BytesIO(data))
PY
umoci new --image "$T/oci:abs" && umoci raw add-layer --image "$T/oci:abs" "$T/abs.tar" ||
    bad "umoci raw add-layer (absolute names)"
# 3. GNU tar's "./" names.
tar -C "$B" -cf "$T/dot.tar" .
umoci new --image "$T/oci:dot" && umoci raw add-layer --image "$T/oci:dot" "$T/dot.tar" ||
    bad "umoci raw add-layer (./ names)"

# What a name list of the layer looks like, for the record of each case.
first_name() { # first_name IMAGE: the first entry name of its first layer
    local m l
    m=$(jq -r ".manifests[] | select(.annotations[\"org.opencontainers.image.ref.name\"]==\"$1\") | .digest" "$T/oci/index.json")
    l=$(jq -r '.layers[0].digest' "$T/oci/blobs/sha256/${m#sha256:}")
    gzip -dc "$T/oci/blobs/sha256/${l#sha256:}" | head -c 100 | tr -d '\0'
}
[ "$(first_name umoci)" = / ] && ok || bad "umoci's layer names its root / ($(first_name umoci))"
[ "$(first_name abs)" = / ] && ok || bad "the absolute layer names its root /"
python3 -c 'import sys, tarfile; print("\n".join(m.name for m in tarfile.open(sys.argv[1])))' \
    "$T/abs.tar" | grep -qx /etc/passwd && ok || bad "the absolute layer has /etc/passwd"
tar -tf "$T/dot.tar" | grep -qx ./etc/passwd && ok || bad "GNU tar wrote ./etc/passwd"

# A listing to compare trees: type, mode, owner, size, link target, content.
tree() {
    (cd "$1" && find . -mindepth 1 -printf '%P %y %m %U:%G %s %l\n' | LC_ALL=C sort &&
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}

for img in umoci abs dot; do
    expect_rc 0 "skopeo push $img" skopeo copy --dest-tls-verify=false \
        "oci:$T/oci:$img" "docker://$REG/foreign/$img:1"
    mkdir -p "$T/ctx-$img"
    printf 'FROM %s/foreign/%s:1\nRUN echo built on %s > /built && cat /etc/passwd > /passwd-copy\n' \
        "$REG" "$img" "$img" > "$T/ctx-$img/Dockerfile"
    expect_rc 0 "kiln build on the $img base" \
        kiln build --progress=plain --tls-verify=false -t "on-$img:1" "$T/ctx-$img"
    rm -rf "$T/base-$img" "$T/res-$img"
    umoci unpack --image "$T/oci:$img" "$T/base-$img" >/dev/null 2>&1 || bad "umoci unpack base $img"
    if ! umoci unpack --image "$KILN_DATA/store:on-$img:1" "$T/res-$img" >/dev/null 2>"$T/umoci.err"; then
        bad "umoci unpack of the image built on $img: $(tail -c 300 "$T/umoci.err")"
        continue
    fi
    R=$T/res-$img/rootfs
    [ "$(cat "$R/built" 2>/dev/null)" = "built on $img" ] && ok || bad "$img: the RUN's file"
    cmp -s "$R/passwd-copy" "$B/etc/passwd" && ok || bad "$img: the RUN read the base's /etc/passwd"
    rm -f "$R/built" "$R/passwd-copy"
    if diff <(tree "$T/base-$img/rootfs") <(tree "$R") >"$T/diff-$img"; then ok; else
        bad "$img: the result's base files differ from umoci's unpack of the base: $(head -c 600 "$T/diff-$img")"
    fi
done
# The climbing name stayed inside, where umoci put it too.
[ "$(cat "$T/res-abs/rootfs/etc/$climb" 2>/dev/null)" = climbed ] && ok ||
    bad "/../../etc/$climb is etc/$climb inside the image"
[ ! -e "/etc/$climb" ] && ok || bad "/etc/$climb was written on the host"

finish
