#!/usr/bin/env bash
# RUN's network, end to end through both services (sandbox containment).
# The script re-runs itself in a network namespace of its own
# that plays the host: a default route on an uplink device, a web server on a
# non-loopback address (10.88.0.1), the same server on 127.0.0.1 and on a
# link-local address (169.254.99.1), kiln-pusher on tcp://127.0.0.1.  Nothing
# leaves that namespace and the real host's network is not touched.
#   - by default RUN reaches 10.88.0.1 but neither 127.0.0.1 (the web server,
#     the pusher's endpoint) nor 169.254.99.1, which the host reaches;
#   - --network none reaches nothing;
#   - --network host / RUN --network=host are refused without the
#     network.host entitlement, and reach the host's loopback with it;
#   - a socket bound to the RUN's network device (SO_BINDTODEVICE, which
#     makes the kernel ignore routes) reaches neither either (kiln-probe);
#   - the RUNs of one build share one private network (the build's: a later
#     RUN is as confined as the first), two builds running at once never do;
#   - nothing is left once a build ends early (a failing stage stops the
#     others) or the builder is killed: no pasta, no RUN process, no
#     namespace held by the builder;
#   - kiln status names the network modes.
# apt-get update in a Debian RUN needs the internet: net_apt_cli.sh.
# Needs root (namespaces), pasta (Debian package passt), busybox, kiln-probe.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}" "${KILN_PROBE_BIN:?}"
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
cp "$KILN_PROBE_BIN" "$B/bin/kiln-probe"
expect_rc 0 "import busybox" kiln import --quiet "$B" busybox:local

# build NAME [kiln build flags...] < Dockerfile
build() {
    local name=$1; shift
    mkdir -p "$T/ctx-$name"; cat > "$T/ctx-$name/Dockerfile"
    kiln build --progress=plain --no-cache "$@" "$T/ctx-$name"
}
get() { echo "timeout 5 wget -q -O - http://$1:$HP/${2:-f}"; }

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

# A socket bound to the RUN's device with SO_BINDTODEVICE: the kernel sends
# on-link whatever the routes say, so only the egress filter stops it.  The
# first RUN shows the probe does bind the device and connect through it.
expect_rc 0 "default: SO_BINDTODEVICE reaches 10.88.0.1" build bind-dev-out <<EOF
FROM busybox:local
RUN kiln-probe connect 10.88.0.1 $HP auto
EOF
grep -q "connect=0 dev=" "$T/err" && ok || bad "SO_BINDTODEVICE probe: $(grep -a "connect=\|setup=" "$T/err")"
expect_rc 0 "default: SO_BINDTODEVICE reaches neither loopback, the pusher nor link-local" build bind-dev <<EOF
FROM busybox:local
RUN kiln-probe connect 10.88.0.1 $HP auto
RUN kiln-probe connect 127.0.0.1 $HP auto; test \$? = 1
RUN kiln-probe connect 127.0.0.1 $PP auto; test \$? = 1
RUN kiln-probe connect 169.254.99.1 $HP auto; test \$? = 1
RUN kiln-probe connect 127.0.0.1 $HP; test \$? = 1
EOF
[ "$(grep -ac "connect=[1-9][0-9]* dev=" "$T/err")" = 4 ] && ok || bad "SO_BINDTODEVICE: $(grep -a "connect=\|setup=" "$T/err")"

# The RUNs of one build share its network; two builds running at once each
# have their own.  Each build's last RUN holds (waiting for a go file the
# web server will serve) until both have printed their namespace.
netns_build() { # NAME
    build "$1" --run-timeout 120s <<EOF >"$T/$1.log" 2>&1
FROM busybox:local
RUN echo NETNS-1=\$(readlink /proc/self/ns/net)
RUN echo NETNS-2=\$(readlink /proc/self/ns/net); until $(get 10.88.0.1 "go-$1") >/dev/null; do sleep 0.1; done
EOF
}
netns_build na & pa=$!
netns_build nb & pb=$!
for _ in $(seq 1200); do
    grep -q NETNS-2 "$T/na.log" && grep -q NETNS-2 "$T/nb.log" && break
    sleep 0.1
done
echo go > "$T/www/go-na"; echo go > "$T/www/go-nb"
wait "$pa" && ok || bad "build na failed: $(tail -c 400 "$T/na.log")"
wait "$pb" && ok || bad "build nb failed: $(tail -c 400 "$T/nb.log")"
ns() { grep -ao "NETNS-$2=net:\[[0-9]*\]" "$T/$1.log" | head -1 | cut -d= -f2; }
a1=$(ns na 1) a2=$(ns na 2) b2=$(ns nb 2)
[ -n "$a1" ] && [ "$a1" = "$a2" ] && ok || bad "the RUNs of one build share its network: '$a1' '$a2'"
[ -n "$b2" ] && [ "$a2" != "$b2" ] && ok || bad "two builds at once have their own networks: '$a2' '$b2'"
[ "$a1" != "$(readlink /proc/self/ns/net)" ] && ok || bad "RUN is in the host's network namespace"

# A build ended early (a stage fails while another one's RUN runs, which
# takes the path of a cancel): its pasta, RUNs and namespace go with it.
# Waits (10 s at most) until the builder has no child process.
no_children() { for _ in $(seq 100); do [ -z "$(pgrep -P "$BPID")" ] && return; sleep 0.1; done; }
# pasta runs below a warden process the builder forks.
builder_pasta() { local k; k=$(pgrep -d, -P "$BPID") && pgrep -P "$k" -f '^pasta '; }
builder_net_fds() { find "/proc/$BPID/fd" -lname 'net:*' 2>/dev/null | wc -l; }
build stopped >"$T/stopped.log" 2>&1 <<EOF &
FROM busybox:local AS x
RUN echo WAITING-X; until false; do sleep 1; done
FROM busybox:local AS y
RUN echo WAITING-Y; until $(get 10.88.0.1 go-fail) >/dev/null; do sleep 0.1; done; exit 3
FROM busybox:local
COPY --from=x /etc/passwd /x
COPY --from=y /etc/passwd /y
EOF
ps_=$!
for _ in $(seq 1200); do
    grep -q WAITING-X "$T/stopped.log" && grep -q WAITING-Y "$T/stopped.log" && break
    sleep 0.1
done
[ -n "$(builder_pasta)" ] && ok || bad "a running build has a pasta ($(pgrep -a -P "$BPID"))"
[ "$(builder_net_fds)" -ge 1 ] && ok || bad "a running build holds its network namespace"
echo go > "$T/www/go-fail"
wait "$ps_" && bad "the stopped build succeeded" || ok
grep -q "exit code: 3" "$T/stopped.log" && ok || bad "the stopped build failed for stage y: $(tail -c 300 "$T/stopped.log")"
no_children # pasta is reaped off the build's path
[ -z "$(pgrep -P "$BPID")" ] && ok || bad "a stopped build left children of the builder: $(pgrep -a -P "$BPID")"
[ "$(builder_net_fds)" = 0 ] && ok || bad "a stopped build left its network namespace open in the builder"

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
no_children
[ -z "$(pgrep -P "$BPID")" ] && ok || bad "the builder still has children: $(pgrep -a -P "$BPID")"

# The builder killed during a RUN: its pasta and the RUN's processes follow
# (PR_SET_PDEATHSIG); the namespace goes with the last of them.
build killed >"$T/killed.log" 2>&1 <<EOF &
FROM busybox:local
RUN echo WAITING-K; until false; do sleep 1; done
EOF
pk=$!
for _ in $(seq 1200); do grep -q WAITING-K "$T/killed.log" && break; sleep 0.1; done
pasta_pid=$(builder_pasta)
kids="$(pgrep -P "$BPID" | tr '\n' ' ') $pasta_pid"
[ -n "$pasta_pid" ] && ok || bad "the RUN's build has a pasta ($(pgrep -a -P "$BPID"))"
kill -9 "$BPID"; wait "$BPID" 2>/dev/null
wait "$pk" 2>/dev/null
left=
for _ in $(seq 100); do
    left=
    for k in $kids; do kill -0 "$k" 2>/dev/null && left="$left $k"; done
    [ -z "$left" ] && break
    sleep 0.1
done
[ -z "$left" ] && ok || bad "processes left after the builder was killed: $(ps -o pid,comm -p "${left# }" 2>/dev/null)"

finish
