#!/usr/bin/env bash
# Installs what Kiln needs from Debian 12's repositories.  Idempotent: does
# nothing when everything is already installed.
#   deploy/install-deps.sh          build + run dependencies (+ docker-registry for the demo)
#   deploy/install-deps.sh --test   also what the test suite uses (skopeo, umoci, clang, qemu-user-static,
#                                   ...; and busybox-static:arm64 fetched for the multi-platform test)
#   deploy/install-deps.sh --bench  also the peers the benchmarks measure against
set -euo pipefail

BUILD=(build-essential cmake pkg-config protobuf-c-compiler libprotobuf-c-dev libnng-dev
       libcurl4-openssl-dev libssl-dev zlib1g-dev libcjson-dev libarchive-dev libdeflate-dev
       libisal-dev libzstd-dev ca-certificates openssl curl jq busybox-static docker-registry
       passt)
TEST=(clang libclang-rt-14-dev clang-format shellcheck nng-utils python3 python3-yaml skopeo umoci
      pigz apache2-utils file xz-utils attr debootstrap man-db iproute2 nodejs npm
      openssh-client qemu-user-static binfmt-support)
BENCH=(hyperfine buildah pigz time)

want=("${BUILD[@]}")
tests=
for arg in "$@"; do
    case "$arg" in
    --test) want+=("${TEST[@]}"); tests=1 ;;
    --bench) want+=("${TEST[@]}" "${BENCH[@]}"); tests=1 ;;
    *) echo "usage: $0 [--test] [--bench]" >&2; exit 2 ;;
    esac
done

# Satisfied by a command from elsewhere too (e.g. nodejs from another
# repository, which bundles npm and conflicts with Debian's npm package).
provided() {
    case "$1" in
    nodejs) command -v node >/dev/null ;;
    npm) command -v npm >/dev/null ;;
    *) return 1 ;;
    esac
}
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || provided "$p" \
        || missing+=("$p")
done
# The multi-platform test (tests/integration/multiplatform_cli.sh) makes an
# arm64 base image from Debian's busybox-static:arm64, fetched here with the
# other packages (the test itself stays offline) into $KILN_TEST_DEBS: dpkg
# must know the arm64 architecture for that (nothing of arm64 is installed).
debs=${KILN_TEST_DEBS:-/var/cache/kiln-test}
foreign='' fetch=''
if [ -n "$tests" ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
    dpkg --print-foreign-architectures | grep -qx arm64 || foreign=arm64
    compgen -G "$debs/busybox-static_*_arm64.deb" >/dev/null || fetch=busybox-static:arm64
fi
[ ${#missing[@]} -eq 0 ] && [ -z "$foreign" ] && [ -z "$fetch" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}${foreign:+ (and the dpkg architecture $foreign)};" \
        "run as root (or install them)" >&2
    exit 1
fi
if [ -n "$foreign" ]; then
    echo "install-deps: adding the dpkg architecture $foreign" >&2
    dpkg --add-architecture "$foreign"
fi
[ ${#missing[@]} -gt 0 ] && echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Debian's docker-registry package would start a registry listening on every
# interface; Kiln starts its own on 127.0.0.1, so keep package scripts from
# starting services during this install.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -n "$fetch" ]; then
    echo "install-deps: fetching $fetch into $debs" >&2
    mkdir -p "$debs" && chmod 755 "$debs"
    tmp=$(mktemp -d "$debs/.fetch-XXXXXX") && chmod 777 "$tmp" # apt-get download runs as _apt
    if (cd "$tmp" && apt-get download -qq "$fetch" >/dev/null 2>&1) && mv "$tmp"/*.deb "$debs/"; then
        :
    else
        echo "install-deps: warning: could not fetch $fetch (multiplatform_cli.sh will skip)" >&2
    fi
    rm -rf "$tmp"
fi
# If a service manager started the packaged registry anyway, stop it.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
