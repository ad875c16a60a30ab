# shellcheck shell=bash
# A farm of Kiln nodes on one machine, for tests/integration/farm_cli.sh and
# bench/farm.sh (sourced after lib.sh; needs root, iproute2, openssl,
# docker-registry, busybox, curl).  Each node is a network namespace holding
# kiln-pusher and kiln-builder as in the Kubernetes pod (ipc:// between them,
# mutual TLS on the node's address for clients); the namespaces hang off a
# bridge in a hub namespace, where the client, one docker-registry and the
# test's helpers run.  Nothing touches the host's own network namespace.
#
#   farm_up N [BUILDER FLAGS...]   start N nodes (kiln-0 ... kiln-N-1); sets
#                 FARM_IP[i], FARM_BPID[i], FARM_PPID[i], FARM_DATA[i], FARM_REG
#   farm_kiln ARGS...   the CLI in the hub, farm.test resolving to every node
#                 (a hosts file), mutual TLS; KILN_BUILDER defaults to the pool
#   farm_node_kiln I ARGS...   the CLI inside node I over ipc://
#   farm_ready I        whether node I's builder answers /readyz with 200
#   farm_down           stop everything, remove the namespaces
FARM_NET=10.77.0
FARM_ID=kf$$
FARM_HUB=$FARM_ID-hub
FARM_N=0
FARM_IP=() FARM_BPID=() FARM_PPID=() FARM_DATA=() FARM_OTHER=()

farm_hub() { ip netns exec "$FARM_HUB" "$@"; }

farm_kiln() {
    # shellcheck disable=SC2016 # expanded by the inner sh
    ip netns exec "$FARM_HUB" unshare -m sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' \
        sh "$T/farm/hosts" "$KILN_CLI_BIN" --timeout "${FARM_TIMEOUT:-3000}" \
        --builder "${FARM_BUILDER:-tls+tcp://farm.test:7403}" --pusher "tls+tcp://${FARM_IP[0]}:7401" \
        --tls-server-name farm.test --tls-ca "$T/farm/pki/ca.crt" \
        --tls-cert "$T/farm/pki/client.crt" --tls-key "$T/farm/pki/client.key" "$@"
}

farm_node_kiln() {
    local i=$1; shift
    ip netns exec "$FARM_ID-$i" env KILN_DATA="${FARM_DATA[$i]}" "$KILN_CLI_BIN" "$@"
}

farm_ready() {
    [ "$(farm_hub curl -s -o /dev/null -w '%{http_code}' "http://${FARM_IP[$1]}:9465/readyz")" = 200 ]
}

farm_pki() {
    local d=$T/farm/pki san="DNS:farm.test,IP:$FARM_NET.1" i
    for ((i = 0; i < FARM_N; i++)); do san+=",DNS:kiln-$i.farm.test,IP:$FARM_NET.$((10 + i))"; done
    mkdir -p "$d"
    (cd "$d" && exec >pki.log 2>&1 &&
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=farm-ca -keyout ca.key -out ca.crt &&
        printf 'subjectAltName=%s\n' "$san" > san.ext &&
        openssl req -newkey rsa:2048 -nodes -subj /CN=farm.test -keyout tls.key -out tls.csr &&
        openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out tls.crt &&
        openssl req -newkey rsa:2048 -nodes -subj /CN=ci -keyout client.key -out client.csr &&
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out client.crt)
}

# farm_start_node I [BUILDER FLAGS...]: (re)starts node I's services.
farm_start_node() {
    local i=$1 ns=$FARM_ID-$1 d=${FARM_DATA[$1]} ip=${FARM_IP[$1]} p=$T/farm/pki; shift
    local tls=(--tls-cert "$p/tls.crt" --tls-key "$p/tls.key" --tls-ca "$p/ca.crt")
    if [ -z "${FARM_PPID[$i]:-}" ] || ! kill -0 "${FARM_PPID[$i]}" 2>/dev/null; then
        ip netns exec "$ns" "$KILN_PUSHER_BIN" --data "$d" --node-name "kiln-$i" "${tls[@]}" \
            --listen "ipc://$d/run/pusher.sock" --listen "tls+tcp://$ip:7401" \
            --events "ipc://$d/run/pusher-events.sock" --events "tls+tcp://$ip:7402" \
            --http "$ip:9464" 2>>"$T/pusher$i.log" &
        FARM_PPID[i]=$!
    fi
    ip netns exec "$ns" "$KILN_BUILDER_BIN" --data "$d" --node-name "kiln-$i" "${tls[@]}" \
        --listen "ipc://$d/run/builder.sock" --listen "tls+tcp://$ip:7403" \
        --events "ipc://$d/run/builder-events.sock" --events "tls+tcp://$ip:7404" \
        --pusher "ipc://$d/run/pusher.sock" --http "$ip:9465" "$@" 2>>"$T/builder$i.log" &
    FARM_BPID[i]=$!
    local _
    for _ in $(seq 300); do farm_ready "$i" && return 0; sleep 0.1; done
    echo "node $i did not become ready: $(farm_hub curl -s "http://$ip:9465/readyz")" >&2
    return 1
}

farm_up() {
    FARM_N=$1; shift
    local i
    mkdir -p "$T/farm"
    ip netns add "$FARM_HUB" || return 1
    farm_hub ip link set lo up
    farm_hub ip link add br0 type bridge
    farm_hub ip addr add "$FARM_NET.1/24" dev br0
    farm_hub ip link set br0 up
    : > "$T/farm/hosts"
    printf '127.0.0.1 localhost\n' >> "$T/farm/hosts"
    for ((i = 0; i < FARM_N; i++)); do
        FARM_IP[i]=$FARM_NET.$((10 + i))
        FARM_DATA[i]=$T/n$i
        ip netns add "$FARM_ID-$i" || return 1
        ip -n "$FARM_ID-$i" link set lo up
        farm_hub ip link add "v$i" type veth peer name eth0 netns "$FARM_ID-$i"
        farm_hub ip link set "v$i" master br0 up
        ip -n "$FARM_ID-$i" addr add "${FARM_IP[$i]}/24" dev eth0
        ip -n "$FARM_ID-$i" link set eth0 up
        # A gateway, as a node's network has: RUN's private network (pasta)
        # takes its addresses and routes from the interface with the default route.
        ip -n "$FARM_ID-$i" route add default via "$FARM_NET.1"
        printf '%s farm.test\n%s kiln-%d.farm.test\n' "${FARM_IP[$i]}" "${FARM_IP[$i]}" "$i" >> "$T/farm/hosts"
    done
    farm_pki || { echo "openssl failed" >&2; return 1; }
    FARM_REG=$FARM_NET.1:5000
    cat > "$T/farm/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/farm/registry } }
http: { addr: $FARM_REG }
CFG
    ip netns exec "$FARM_HUB" docker-registry serve "$T/farm/registry.yml" >"$T/farm/registry.log" 2>&1 &
    FARM_OTHER+=($!)
    for ((i = 0; i < FARM_N; i++)); do farm_start_node "$i" "$@" || return 1; done
    local _
    for _ in $(seq 100); do farm_hub curl -fs "http://$FARM_REG/v2/" >/dev/null && break; sleep 0.1; done
    # The base every project builds FROM, in the registry all nodes pull from.
    busybox_rootfs "$T/farm/busybox"
    farm_node_kiln 0 import --quiet "$T/farm/busybox" busybox:local >/dev/null &&
        farm_node_kiln 0 push --quiet --tls-verify=false busybox:local "$FARM_REG/busybox:1" >/dev/null
}

farm_down() {
    local p i
    # SIGINT: the services stop without waiting out a drain.
    for p in "${FARM_BPID[@]}" "${FARM_PPID[@]}"; do kill -INT "$p" 2>/dev/null; done
    for p in "${FARM_OTHER[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${FARM_BPID[@]}" "${FARM_PPID[@]}" "${FARM_OTHER[@]}"; do wait "$p" 2>/dev/null; done
    for ((i = 0; i < FARM_N; i++)); do ip netns del "$FARM_ID-$i" 2>/dev/null; done
    ip netns del "$FARM_HUB" 2>/dev/null
    FARM_N=0
}
