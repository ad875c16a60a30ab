#!/usr/bin/env bash
# Multi-platform builds: `kiln build --platform linux/amd64,linux/arm64 --push`
# on an x86_64 host, the arm64 RUNs under QEMU user emulation (a binfmt_misc
# handler for aarch64 with the F flag; registered here if missing), the base
# images taken per platform from a multi-platform index the test pushes (an
# amd64 busybox from the host's busybox-static, an arm64 one from Debian's
# busybox-static:arm64 that deploy/install-deps.sh --test fetches), and
# checked with skopeo and umoci:
#   - the pushed index names both platforms, each config its architecture,
#     /arch holds x86_64 and aarch64 (RUN uname -m), and the FROM
#     --platform=$BUILDPLATFORM stage ran natively with TARGETARCH per target;
#   - --format docker pushes a Docker manifest list; without --push the index
#     is stored under the tag; --plan gives one plan per platform;
#   - Status and the sandbox check list linux/arm64 (emulated).
# Then, on a second builder whose binfmt_misc view ($KILN_BINFMT_MISC) has
# no usable handler: a foreign RUN fails naming the package or the entry
# that is missing, and nothing is tagged or pushed; a COPY-only build for a
# foreign platform needs no emulation.  Needs root (RUN sandbox, binfmt_misc).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
[ "$(uname -m)" = x86_64 ] || { echo "written for an x86_64 host (arm64 is the emulated platform)"; exit 77; }
for t in docker-registry skopeo umoci jq curl busybox python3 dpkg-deb sha256sum file; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-mp-XXXXXX)
PIDS=()
BM=/proc/sys/fs/binfmt_misc
REGISTERED=
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    [ -n "$REGISTERED" ] && echo -1 > "$BM/$REGISTERED" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

# ---- an arm64 handler with the F flag ----
AARCH64_MAGIC=7f454c460201010000000000000000000200b700
handler_ok() { # an enabled binfmt_misc entry for aarch64 ELF with the F flag
    local f
    for f in "$BM"/*; do
        case ${f##*/} in status | register) continue ;; esac
        grep -qx enabled "$f" 2>/dev/null && grep -q '^flags:.*F' "$f" &&
            grep -q "^magic $AARCH64_MAGIC" "$f" && return 0
    done
    return 1
}
if [ ! -e "$BM/status" ] && ! mount -t binfmt_misc binfmt_misc "$BM" 2>/dev/null; then
    echo "binfmt_misc is not mounted at $BM and cannot be mounted here: no arm64 emulation"; exit 77
fi
if ! handler_ok && [ -e "$BM/qemu-aarch64" ] && command -v update-binfmts >/dev/null; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1
fi
if ! handler_ok && [ ! -e "$BM/qemu-aarch64" ] && [ -x /usr/bin/qemu-aarch64-static ]; then
    # The kernel opens the interpreter now (F): it need not be in the image.
    printf '%s\n' ':kiln-test-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
        > "$BM/register" 2>/dev/null && REGISTERED=kiln-test-aarch64
fi
if ! handler_ok; then
    echo "no binfmt_misc handler for aarch64 with the F flag, and none can be registered here" \
        "(install qemu-user-static and binfmt-support)"
    exit 77
fi

# ---- busybox for arm64: Debian's busybox-static:arm64, fetched by
# deploy/install-deps.sh --test (this test stays offline) ----
DEBS=${KILN_TEST_DEBS:-/var/cache/kiln-test}
DEB=$(compgen -G "$DEBS/busybox-static_*_arm64.deb" | head -n 1)
if [ -z "$DEB" ]; then
    echo "no busybox-static:arm64 package in $DEBS: deploy/install-deps.sh --test fetches it"
    exit 77
fi
dpkg-deb -x "$DEB" "$T/bb-arm64" || { bad "dpkg-deb -x"; finish; exit 1; }
file -b "$T/bb-arm64/bin/busybox" | grep -q aarch64 && ok || bad "the package holds an aarch64 busybox"

# ---- services: a registry, a pusher and a builder (+ a pair without emulation) ----
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
# The second builder sees a binfmt_misc with no usable handler: riscv64
# absent, s390x registered without F.
mkdir -p "$T/binfmt"
echo enabled > "$T/binfmt/status"
printf 'enabled\ninterpreter /usr/bin/qemu-s390x-static\nflags: P\noffset 0\nmagic 7f454c4602020100000000000000000000020016\nmask fffffffffffffffcfffffffffffffffffffeffff\n' \
    > "$T/binfmt/qemu-s390x"
KILN_DATA=$T/data2 "$KILN_PUSHER_BIN" 2>"$T/pusher2.log" & PIDS+=($!)
KILN_DATA=$T/data2 KILN_BINFMT_MISC=$T/binfmt "$KILN_BUILDER_BIN" 2>"$T/builder2.log" & PIDS+=($!)
kiln2() { "$KILN_CLI_BIN" --data "$T/data2" "$@"; }
for _ in $(seq 100); do
    curl -fs "http://$REG/v2/" >/dev/null && kiln status >/dev/null 2>&1 && kiln2 status >/dev/null 2>&1 && break
    sleep 0.1
done
kiln status --json > "$T/status.json" 2>/dev/null
if ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: $(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")"
    exit 77
fi

# Status: arm64 among the platforms, marked emulated, here and in the check.
jq -e '.builder.platforms[0] == "linux/amd64" and (.builder.platforms | index("linux/arm64"))
       and (.builder.emulated_platforms | index("linux/arm64"))
       and ((.builder.emulated_platforms | index("linux/amd64")) | not)' "$T/status.json" >/dev/null \
    && ok || bad "Status: linux/arm64 emulated ($(jq -c '.builder | {platforms, emulated_platforms}' "$T/status.json"))"
jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json" |
    jq -e '.platforms | startswith("linux/amd64, ") and contains("linux/arm64 (emulated)")' >/dev/null \
    && ok || bad "the sandbox check lists linux/arm64 (emulated)"
kiln status > "$T/status.txt" 2>&1
grep -q 'platforms: linux/amd64, .*linux/arm64 (emulated)' "$T/status.txt" && ok \
    || bad "kiln status prints the platforms ($(grep platforms "$T/status.txt"))"

# ---- the multi-platform base: an index of amd64 and arm64 busybox ----
busybox_rootfs "$T/root-amd64"
cp -a "$T/root-amd64" "$T/root-arm64"
cp "$T/bb-arm64/bin/busybox" "$T/root-arm64/bin/busybox"
expect_rc 0 "import the amd64 base" kiln import rootfs:"$T/root-amd64" mpbase:amd64
expect_rc 0 "import the arm64 base" kiln import --platform linux/arm64 rootfs:"$T/root-arm64" mpbase:arm64
expect_rc 0 "manifest create" kiln manifest create mpbase:multi
expect_rc 0 "manifest add amd64" kiln manifest add mpbase:multi mpbase:amd64
expect_rc 0 "manifest add arm64" kiln manifest add mpbase:multi mpbase:arm64
BASE=$REG/mp/busybox:1
expect_rc 0 "push the base index" kiln manifest push mpbase:multi "$BASE"
BASE_ARM_LAYER=$(kiln inspect mpbase:arm64 | jq -r '.manifest.layers[0].digest')
BASE_AMD_LAYER=$(kiln inspect mpbase:amd64 | jq -r '.manifest.layers[0].digest')
# The builds must take the base from the registry's index, one platform each.
expect_rc 0 "drop the local base tags" kiln rmi mpbase:amd64 mpbase:arm64 mpbase:multi

# ---- the build ----
mkdir -p "$T/ctx"
cat > "$T/ctx/Dockerfile" <<EOF
ARG BASE=$BASE
FROM --platform=\$BUILDPLATFORM \$BASE AS gen
ARG TARGETARCH TARGETPLATFORM TARGETVARIANT BUILDPLATFORM
RUN echo "\$TARGETARCH [\$TARGETVARIANT] \$TARGETPLATFORM from \$BUILDPLATFORM on \$(uname -m)" > /gen-\$TARGETARCH
FROM \$BASE
ARG TARGETARCH
COPY --from=gen /gen-\$TARGETARCH /gen
RUN uname -m > /arch
EOF
APP=$REG/mp/app:1
expect_rc 0 "build for linux/amd64,linux/arm64 --push" \
    kiln build --progress=plain --platform linux/amd64,linux/arm64 -t "$APP" --push "$T/ctx"
cp "$T/out" "$T/build.out"; cp "$T/err" "$T/build.err"
INDEX=$(tail -n 1 "$T/build.out")
grep -q 'pulling .*mp/busybox:1 for linux/arm64' "$T/build.err" && ok || bad "the arm64 base was pulled for linux/arm64"
grep -q 'RUN for linux/arm64 under QEMU user emulation' "$T/build.err" && ok || bad "the build says arm64 RUNs are emulated"

skopeo inspect --raw --tls-verify=false "docker://$APP" > "$T/index.json" 2>"$T/skopeo.err" && ok \
    || bad "skopeo inspect --raw $APP: $(cat "$T/skopeo.err")"
jq -e '.mediaType == "application/vnd.oci.image.index.v1+json" and (.manifests | length) == 2
       and ([.manifests[].platform | "\(.os)/\(.architecture)"] | sort) == ["linux/amd64", "linux/arm64"]
       and ([.manifests[].platform.variant] | all(. == null))' "$T/index.json" >/dev/null \
    && ok || bad "the pushed index names linux/amd64 and linux/arm64 ($(jq -c . "$T/index.json"))"
[ "sha256:$(sha256sum < "$T/index.json" | cut -d' ' -f1)" = "$INDEX" ] && ok \
    || bad "kiln build printed the pushed index's digest ($INDEX)"
for a in amd64:x86_64 arm64:aarch64; do
    arch=${a%%:*} uname=${a#*:}
    skopeo inspect --config --override-arch "$arch" --tls-verify=false "docker://$APP" \
        > "$T/config-$arch.json" 2>"$T/skopeo.err"
    [ "$(jq -r '"\(.os)/\(.architecture)"' "$T/config-$arch.json")" = "linux/$arch" ] && ok \
        || bad "$arch: the config says $(jq -c '{os, architecture, variant}' "$T/config-$arch.json")"
    skopeo copy -q --override-arch "$arch" --src-tls-verify=false "docker://$APP" "oci:$T/oci:$arch" \
        >/dev/null 2>"$T/skopeo.err" || bad "skopeo copy $arch: $(cat "$T/skopeo.err")"
    umoci unpack --image "$T/oci:$arch" "$T/unpack-$arch" >/dev/null 2>&1 || bad "umoci unpack $arch"
    R=$T/unpack-$arch/rootfs
    [ "$(cat "$R/arch" 2>/dev/null)" = "$uname" ] && ok || bad "$arch: /arch is '$(cat "$R/arch" 2>/dev/null)', want $uname"
    # The gen stage ran on the build platform, for each target.
    [ "$(cat "$R/gen" 2>/dev/null)" = "$arch [] linux/$arch from linux/amd64 on x86_64" ] && ok \
        || bad "$arch: /gen is '$(cat "$R/gen" 2>/dev/null)'"
    # The busybox of the right platform came from the base index.
    want=x86-64; [ "$arch" = arm64 ] && want=aarch64
    file -b "$R/bin/busybox" | grep -q "$want" && ok || bad "$arch: /bin/busybox is $(file -b "$R/bin/busybox")"
done
M_ARM=$(jq -r '.manifests[] | select(.platform.architecture=="arm64") | .digest' "$T/index.json")
M_AMD=$(jq -r '.manifests[] | select(.platform.architecture=="amd64") | .digest' "$T/index.json")
[ "$(skopeo inspect --raw --tls-verify=false "docker://$REG/mp/app@$M_ARM" | jq -r '.layers[0].digest')" = "$BASE_ARM_LAYER" ] \
    && [ "$(skopeo inspect --raw --tls-verify=false "docker://$REG/mp/app@$M_AMD" | jq -r '.layers[0].digest')" = "$BASE_AMD_LAYER" ] \
    && ok || bad "each platform's image starts from its base's layer"
# The store has the index under the tag, and the base's tag serves both platforms.
[ "$(kiln inspect "$APP" | jq -r .digest)" = "$INDEX" ] && ok || bad "the index is tagged in the store"
kiln manifest inspect "$BASE" | jq -e '.manifests | length == 2' >/dev/null && ok \
    || bad "the base's tag names its index in the store"

# A rebuild is served from the cache and gives the same index.
expect_rc 0 "rebuild" kiln build --progress=plain --platform linux/amd64,linux/arm64 -t "$APP" --push "$T/ctx"
[ "$(tail -n 1 "$T/out")" = "$INDEX" ] && ok || bad "the rebuild gives the same index ($(tail -n 1 "$T/out"))"
grep -q 'pulling' "$T/err" && bad "the rebuild pulled a base again" || ok
[ "$(grep -c '^#[0-9]* CACHED' "$T/err")" -ge 6 ] && ok || bad "the rebuild's steps were cached"

# --format docker: a Docker manifest list of Docker schema 2 manifests.
expect_rc 0 "build --format docker --push" \
    kiln build --progress=quiet --platform linux/amd64,linux/arm64 --format docker -t "$REG/mp/app:docker" --push "$T/ctx"
skopeo inspect --raw --tls-verify=false "docker://$REG/mp/app:docker" > "$T/list.json" 2>/dev/null
jq -e '.mediaType == "application/vnd.docker.distribution.manifest.list.v2+json"
       and ([.manifests[].mediaType] | unique) == ["application/vnd.docker.distribution.manifest.v2+json"]
       and ([.manifests[].platform.architecture] | sort) == ["amd64", "arm64"]' "$T/list.json" >/dev/null \
    && ok || bad "--format docker pushed a manifest list ($(jq -c . "$T/list.json"))"

# Without --push: the index is stored under each tag, nothing reaches the registry.
expect_rc 0 "build without --push" \
    kiln build --progress=quiet --platform linux/arm64,linux/amd64 -t "$REG/mp/local:1" -t mp-local:2 "$T/ctx"
L=$(tail -n 1 "$T/out")
kiln manifest inspect mp-local:2 > "$T/local.json" 2>/dev/null
jq -e '[.manifests[].platform.architecture] == ["arm64", "amd64"]' "$T/local.json" >/dev/null && ok \
    || bad "the local index lists arm64, then amd64 ($(jq -c . "$T/local.json"))"
[ "$(kiln inspect "$REG/mp/local:1" | jq -r .digest)" = "$L" ] && [ "$(kiln inspect mp-local:2 | jq -r .digest)" = "$L" ] \
    && ok || bad "both tags name the index"
skopeo inspect --raw --tls-verify=false "docker://$REG/mp/local:1" >/dev/null 2>&1 \
    && bad "a build without --push pushed" || ok
kiln images | grep -q kiln-build-index && bad "the index's temporary name was left in the store" || ok

# --plan: one plan per platform.
expect_rc 0 "build --plan for two platforms" kiln build --plan --platform linux/amd64,linux/arm/v7 "$T/ctx"
jq -e 'length == 2 and .[0].target_platform == "linux/amd64" and .[1].target_platform == "linux/arm/v7"' \
    "$T/out" >/dev/null && ok || bad "--plan: two plans ($(head -c 300 "$T/out"))"
expect_rc 2 "--platform twice the same" kiln build --platform linux/arm64,linux/aarch64 -t x:1 "$T/ctx"
grep -q 'names linux/arm64 twice' "$T/err" && ok || bad "a duplicate platform is named ($(cat "$T/err"))"

# ---- a builder without emulation ----
jq -e '.builder.platforms == ["linux/amd64"] and (.builder.emulated_platforms // [] | length) == 0' \
    <(kiln2 status --json) >/dev/null && ok || bad "the second builder runs only linux/amd64"
mkdir -p "$T/ctx-run" "$T/ctx-copy"
cp "$(command -v busybox)" "$T/ctx-run/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "true"]\n' > "$T/ctx-run/Dockerfile"
expect_rc 4 "foreign RUN without a handler" \
    kiln2 build --progress=plain --platform linux/amd64,linux/riscv64 -t "$REG/mp/neg:1" --push "$T/ctx-run"
grep -q 'RUN for linux/riscv64 needs a binfmt_misc handler for riscv64 with the F flag: install qemu-user-static and binfmt-support' "$T/err" \
    && ok || bad "the missing handler is named ($(tail -c 400 "$T/err"))"
grep -q 'failed at Dockerfile:3' "$T/err" && ok || bad "the RUN's line is named"
grep -q 'nothing was tagged or pushed' "$T/err" && ok || bad "the CLI says nothing was tagged"
kiln2 inspect "$REG/mp/neg:1" >/dev/null 2>&1 && bad "a failed multi-platform build tagged" || ok
skopeo inspect --raw --tls-verify=false "docker://$REG/mp/neg:1" >/dev/null 2>&1 \
    && bad "a failed multi-platform build pushed" || ok
expect_rc 4 "foreign RUN, handler without F" kiln2 build --progress=plain --platform linux/s390x -t neg:2 "$T/ctx-run"
grep -q "qemu-s390x has no F flag" "$T/err" && grep -q 'qemu-s390x-static' "$T/err" \
    && ok || bad "the entry without F is named ($(tail -c 400 "$T/err"))"
kiln2 inspect neg:2 >/dev/null 2>&1 && bad "neg:2 was tagged" || ok
# COPY-only stages build for any platform, no emulation involved.
echo hello > "$T/ctx-copy/hello"
printf 'FROM scratch\nCOPY hello /hello\nCMD ["/hello"]\n' > "$T/ctx-copy/Dockerfile"
expect_rc 0 "COPY-only for linux/s390x and linux/riscv64" \
    kiln2 build --progress=plain --platform linux/s390x,linux/riscv64 -t copyonly:1 "$T/ctx-copy"
kiln2 manifest inspect copyonly:1 > "$T/copy.json" 2>/dev/null
jq -e '[.manifests[].platform.architecture] == ["s390x", "riscv64"]' "$T/copy.json" >/dev/null && ok \
    || bad "the COPY-only index ($(jq -c . "$T/copy.json"))"
D=$(jq -r '.manifests[0].digest' "$T/copy.json")
[ "$(kiln2 inspect "$D" | jq -r '.config.architecture')" = s390x ] && ok \
    || bad "the s390x image's config says s390x"
grep -q 'emulation' "$T/err" && bad "a COPY-only build used emulation" || ok

finish
