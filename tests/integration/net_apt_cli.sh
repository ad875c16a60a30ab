#!/usr/bin/env bash
# apt-get update in a Debian-based RUN on the default (private) network: the
# RUN reaches the Debian mirror through pasta and resolves its name through
# the RUN's /etc/resolv.conf.
#
# Needs the network: the test reaches the mirror apt uses on this machine
# (first from the host; skipped, exit 77, when it cannot), and a Debian 12
# root to use as the base image: the debootstrap root tests/fresh-root.sh
# keeps in $KILN_FRESH_ROOT_CACHE (default /var/cache/kiln-fresh-root;
# skipped when there is none).  Needs root and pasta (Debian package passt).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
skip() { echo "SKIPPED: $*"; exit 77; }
# The default suite keeps its traffic on this machine: this one goes to the
# Debian mirror, so it runs only when asked for.
[ "${KILN_TEST_NETWORK:-0}" = 1 ] ||
    skip "needs network (traffic to the Debian mirror): run with KILN_TEST_NETWORK=1"
[ "$(id -u)" = 0 ] || skip "needs root"
for t in pasta curl jq; do command -v $t >/dev/null || skip "$t missing"; done
base=${KILN_FRESH_ROOT_CACHE:-/var/cache/kiln-fresh-root}/bookworm-minbase
[ -f "$base/.complete" ] ||
    skip "no Debian 12 root in $base to use as the base image (tests/fresh-root.sh makes it)"
# The mirror the base's apt uses, reached from the host as a RUN would.
mirror=$(awk '$1 == "deb" { print $2; exit }' "$base/etc/apt/sources.list" 2>/dev/null)
mirror=${mirror:-http://deb.debian.org/debian}
proxy=$(apt-config shell P Acquire::http::Proxy 2>/dev/null | sed -n "s/^P='\(.*\)'$/\1/p")
case "$proxy" in
*://127.* | *://localhost* | *://\[::1\]*)
    skip "needs network: apt's proxy $proxy is on the host's loopback, which RUN cannot reach" ;;
esac
if [ -n "$proxy" ]; then export http_proxy=$proxy; fi
curl -fsS -m 20 -o /dev/null "$mirror/dists/bookworm/Release" 2>/dev/null ||
    skip "needs network: this machine cannot reach the Debian mirror $mirror${proxy:+ (proxy $proxy)}"

T=$(mktemp -d /tmp/kiln-net-apt-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }
"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & BPID=$!
PIDS+=("$BPID")
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
kiln status --json 2>/dev/null | jq -e '.builder.checks[] | select(.name=="sandbox") | .detail | fromjson | .network_private' >/dev/null ||
    skip "the builder's private network is unavailable here (kiln status)"

expect_rc 0 "import the Debian base" kiln import --quiet "$base" debian:local
mkdir -p "$T/ctx"
{
    echo 'FROM debian:local'
    [ -n "$proxy" ] && echo "ENV http_proxy=$proxy"
    echo 'RUN apt-get update && apt-cache policy | grep -q bookworm && echo APT-OK'
} > "$T/ctx/Dockerfile"
expect_rc 0 "apt-get update in a RUN on the default network" \
    kiln build --progress=plain --no-cache "$T/ctx"
grep -q APT-OK "$T/err" && ok || bad "apt-get update: $(tail -c 600 "$T/err")"
grep -q "Get:[0-9]* .*bookworm" "$T/err" && ok || bad "apt-get update fetched nothing: $(tail -c 600 "$T/err")"
finish
