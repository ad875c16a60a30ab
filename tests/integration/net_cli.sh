#!/usr/bin/env bash
# RUN's network, end to end through both services (issue: sandbox
# containment).  The script re-runs itself in a network namespace of its own
# that plays the host: a default route on an uplink device, a web server on a
# non-loopback address (10.88.0.1), the same server on 127.0.0.1 and on a
# link-local address (169.254.99.1), kiln-pusher on tcp://127.0.0.1.  Nothing
# leaves that namespace and the real host's network is not touched.
#   - by default RUN reaches 10.88.0.1 but neither 127.0.0.1 (the web server,
#     the pusher's endpoint) nor 169.254.99.1, which the host reaches;
#   - --network none reaches nothing;
#   - --network host / RUN --network=host are refused without the
#     network.host entitlement, and reach the host's loopback with it;
#   - kiln status names the network modes;
#   - apt-get update in a Debian RUN (needs the internet: skipped without).
# Needs root (namespaces), pasta (Debian package passt), busybox.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
for t in busybox jq pasta unshare ip; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

if [ "${KILN_NET_TEST_INNER:-}" != 1 ]; then
    export KILN_NET_TEST_INNER=1
    exec unshare --net -- bash "$0" "$@"
fi

T=$(mktemp -d /tmp/kiln-net-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

# The namespace's devices: dummy where the kernel has it, else an empty
# bridge (both only carry local addresses here).
mkdev() { ip link add "$1" type dummy 2>/dev/null || ip link add "$1" type bridge || exit 77; ip link set "$1" up; }
ip link set lo up
PP=$(free_port)
mkdev kup && ip addr add 10.77.0.2/24 dev kup && ip route add default via 10.77.0.1 dev kup
mkdev ksrv && ip addr add 10.88.0.1/24 dev ksrv
mkdev kmeta && ip addr add 169.254.99.1/16 dev kmeta

mkdir -p "$T/www" && echo "served-file-content" > "$T/www/f"
HP=$(free_port)
busybox httpd -f -p "10.88.0.1:$HP" -h "$T/www" & PIDS+=($!)
busybox httpd -f -p "127.0.0.1:$HP" -h "$T/www" & PIDS+=($!)
busybox httpd -f -p "169.254.99.1:$HP" -h "$T/www" & PIDS+=($!)

# The pusher the builds use (ipc), and one on a tcp:// endpoint on loopback.
"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
KILN_DATA=$T/data2 "$KILN_PUSHER_BIN" --listen "tcp://127.0.0.1:$PP" 2>"$T/pusher-tcp.log" & PIDS+=($!)
start_builder() {
    "$KILN_BUILDER_BIN" "$@" 2>>"$T/builder.log" & BPID=$!
    PIDS+=("$BPID")
    for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
}
start_builder
sleep 0.3
# The host itself reaches all three servers and the tcp pusher.
for a in 10.88.0.1 127.0.0.1 169.254.99.1; do
    [ "$(busybox timeout 5 busybox wget -q -O - "http://$a:$HP/f")" = served-file-content ] && ok || bad "the host reaches $a"
done
busybox nc -w 3 127.0.0.1 "$PP" </dev/null && ok || bad "the host reaches the tcp pusher"
expect_fail() { local desc=$1; shift; "$@" >"$T/out" 2>"$T/err" && bad "$desc: succeeded" || ok; }

kiln status --json > "$T/status.json" 2>/dev/null
jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null || {
    echo "sandbox unusable here: $(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")"
    exit 77
}
SB=$(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")
echo "$SB" | jq -e '.network | test("none")' >/dev/null && ok || bad "status names the network modes: $SB"
echo "$SB" | jq -e '.network_host_entitlement == false' >/dev/null && ok || bad "status: no network.host entitlement"
# pasta is installed (checked above): the private network must work.
echo "$SB" | jq -e '.network_private' >/dev/null && ok || bad "private network unavailable: $(echo "$SB" | jq -r .network)"

# The base image: busybox-static as a root filesystem.
B=$T/busybox
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root"
cp "$(command -v busybox)" "$B/bin/busybox"
for a in $("$B/bin/busybox" --list-full); do
    mkdir -p "$B/$(dirname "$a")"; [ -e "$B/$a" ] || ln -s /bin/busybox "$B/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$B/etc/passwd"
printf 'root:x:0:\n' > "$B/etc/group"
chmod 1777 "$B/tmp"
expect_rc 0 "import busybox" kiln import --quiet "$B" busybox:local

# build NAME [kiln build flags...] < Dockerfile
build() {
    local name=$1; shift
    mkdir -p "$T/ctx-$name"; cat > "$T/ctx-$name/Dockerfile"
    kiln build --progress=plain --no-cache "$@" "$T/ctx-$name"
}
get() { echo "timeout 5 wget -q -O - http://$1:$HP/f"; }

# Default network: outbound to a non-loopback address works ...
expect_rc 0 "default: RUN fetches from 10.88.0.1" build out <<EOF
FROM busybox:local
RUN $(get 10.88.0.1) > /got && grep -q served-file-content /got
EOF
# ... the host's loopback, the pusher's tcp endpoint and link-local do not.
expect_rc 0 "default: 127.0.0.1, the pusher and 169.254.99.1 unreachable" build blocked <<EOF
FROM busybox:local
RUN if $(get 127.0.0.1); then echo REACHED-LOOPBACK-\$((6*7)); exit 1; fi
RUN if nc -w 3 127.0.0.1 $PP </dev/null; then echo REACHED-PUSHER-\$((6*7)); exit 1; fi
RUN if $(get 169.254.99.1); then echo REACHED-LINK-LOCAL-\$((6*7)); exit 1; fi
EOF
grep -q "REACHED-[A-Z-]*-42" "$T/err" && bad "default network reached: $(grep -o "REACHED-[A-Z-]*-42" "$T/err")" || ok
# The same, each as a RUN that must fail (what today's host network lets through).
for a in 127.0.0.1 169.254.99.1; do
    expect_fail "default: RUN reaching $a fails" build "to-$a" <<EOF
FROM busybox:local
RUN $(get $a)
EOF
done
expect_fail "default: RUN reaching the pusher's tcp endpoint fails" build to-pusher <<EOF
FROM busybox:local
RUN nc -w 3 127.0.0.1 $PP </dev/null
EOF
# No raw sockets on the private network (a frame written to the tap device
# would bypass the filter).
expect_rc 0 "default: no CAP_NET_RAW" build caps <<EOF
FROM busybox:local
RUN grep CapEff /proc/self/status; test \$(( 0x\$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status) >> 13 & 1 )) = 0
EOF

# --network none reaches neither.
expect_rc 0 "--network none: nothing reachable" build none --network none <<EOF
FROM busybox:local
RUN if $(get 10.88.0.1); then echo REACHED-OUT-\$((6*7)); exit 1; fi
RUN if $(get 127.0.0.1); then echo REACHED-LOOPBACK-\$((6*7)); exit 1; fi
EOF
grep -q "REACHED-[A-Z-]*-42" "$T/err" && bad "--network none reached: $(grep -o "REACHED-[A-Z-]*-42" "$T/err")" || ok

# --network host: refused without the entitlement, before any RUN runs.
expect_fail "--network host refused" build host --network host <<EOF
FROM busybox:local
RUN echo RAN-\$((40+2))
EOF
grep -q "network.host entitlement" "$T/err" && ok || bad "--network host: the error names the entitlement ($(tail -c 300 "$T/err"))"
grep -q RAN-42 "$T/err" && bad "--network host: a RUN ran" || ok
expect_fail "RUN --network=host refused" build host-run <<EOF
FROM busybox:local
RUN echo RAN-\$((40+2))
RUN --network=host echo RAN-\$((40+3))
EOF
grep -q "network.host entitlement" "$T/err" && ok || bad "RUN --network=host: the error names the entitlement ($(tail -c 300 "$T/err"))"
grep -q "RAN-4[23]" "$T/err" && bad "RUN --network=host: a RUN ran before the refusal" || ok

# With the entitlement, host network it is (host loopback included).
kill "$BPID"; wait "$BPID" 2>/dev/null
start_builder --allow-insecure-entitlement network.host
kiln status --json 2>/dev/null | jq -e '.builder.checks[] | select(.name=="sandbox") | .detail | fromjson | .network_host_entitlement' >/dev/null \
    && ok || bad "status: network.host entitlement granted"
expect_rc 0 "--network host with the entitlement" build host2 --network host <<EOF
FROM busybox:local
RUN $(get 127.0.0.1) | grep -q served-file-content
EOF
expect_rc 0 "RUN --network=host with the entitlement" build host-run2 <<EOF
FROM busybox:local
RUN --network=host $(get 127.0.0.1) | grep -q served-file-content
RUN if $(get 127.0.0.1); then echo REACHED-LOOPBACK-\$((6*7)); exit 1; fi
EOF
expect_rc 2 "unknown entitlement refused" "$KILN_BUILDER_BIN" --allow-insecure-entitlement bogus --version

# Nothing of the steps is left running: the builder has no child (pasta,
# monitor) once the builds are done.
sleep 0.3
[ -z "$(pgrep -P "$BPID")" ] && ok || bad "the builder still has children: $(pgrep -a -P "$BPID")"

echo "skipped: apt-get update in a Debian-based RUN (needs the internet, which this test's namespace does not have; bench/build.sh --apt checks it where there is)"
finish
