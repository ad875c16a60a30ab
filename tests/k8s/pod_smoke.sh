#!/usr/bin/env bash
# The pod of deploy/k8s/kiln.yaml started as two processes: each container's
# exact command, args and env read from the manifest (tests/k8s/pod_spec.py
# rewrites only paths and ports: /var/lib/kiln -> a temp dir shared by both,
# /etc/kiln/tls -> generated certificates, ports -> free ports on 127.0.0.1).
# Waits for both readiness probes, runs a build over mutual TLS the way a
# client outside the pod would, then shuts the pod down as the kubelet does:
# SIGTERM to the builder while the pusher's preStop hook waits for it to exit,
# then SIGTERM to the pusher; both exit 0.
set -u
. "$(dirname "$0")/../integration/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
for t in curl jq openssl python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
python3 -c 'import yaml' 2>/dev/null || { echo "python3-yaml missing"; exit 77; }
SRC=$(cd "$(dirname "$0")/../.." && pwd)

T=$(mktemp -d /tmp/kiln-pod-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/data" "$T/tls" "$T/ctx"

# The kiln-tls Secret: a CA, a server certificate for the pool's names (as in
# deploy/README.md), a client certificate.
(cd "$T/tls" && exec >pki.log 2>&1 &&
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-ca -keyout ca.key -out ca.crt &&
    printf 'subjectAltName=DNS:kiln.build.svc,DNS:*.kiln.build.svc\n' > san.ext &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=kiln.build.svc -keyout tls.key -out tls.csr &&
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out tls.crt &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=ci-runner -keyout client.key -out client.csr &&
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out client.crt) \
    || { echo "openssl failed"; exit 1; }

python3 "$SRC/tests/k8s/pod_spec.py" "${KILN_K8S_MANIFEST:-$SRC/deploy/k8s/kiln.yaml}" "$T/data" "$T/tls" kiln-0 \
    "pusher=$KILN_PUSHER_BIN" "builder=$KILN_BUILDER_BIN" "kiln=$KILN_CLI_BIN" > "$T/pod.sh" || { echo "pod_spec.py failed"; exit 1; }
# shellcheck disable=SC1091
. "$T/pod.sh"

# What the image adds to a container's environment (deploy/Dockerfile), and
# the sanitizer settings of an instrumented build.
base_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "KILN_DATA=$T/data")
for v in ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; do [ -n "${!v:-}" ] && base_env+=("$v=${!v}"); done
env -i "${base_env[@]}" "${PUSHER_ENV[@]}" "${PUSHER_ARGV[@]}" 2>"$T/pusher.log" & PIDS[0]=$!
env -i "${base_env[@]}" "${BUILDER_ENV[@]}" "${BUILDER_ARGV[@]}" 2>"$T/builder.log" & PIDS[1]=$!

ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ]; }
for _ in $(seq 300); do ready "$PUSHER_READY" && ready "$BUILDER_READY" && break; sleep 0.1; done
ready "$PUSHER_READY" && ok || bad "pusher readiness probe ($(curl -s "$PUSHER_READY"))"
if ! ready "$BUILDER_READY"; then
    if curl -s "$BUILDER_READY" | grep -q '^sandbox FAIL'; then echo "sandbox unusable here"; exit 77; fi
    bad "builder readiness probe ($(curl -s "$BUILDER_READY"))"
fi

kiln() {
    "$KILN_CLI_BIN" --builder "tls+tcp://127.0.0.1:$BUILDER_PORT_BUILDER_RPC" \
        --pusher "tls+tcp://127.0.0.1:$PUSHER_PORT_PUSHER_RPC" --tls-server-name kiln-0.kiln.build.svc \
        --tls-ca "$T/tls/ca.crt" --tls-cert "$T/tls/client.crt" --tls-key "$T/tls/client.key" "$@"
}
expect_rc 0 "status over mTLS" kiln status --json
jq -e '.builder.node_name == "kiln-0" and .pusher.node_name == "kiln-0"
       and (.builder.checks | all(.ok)) and (.pusher.checks | all(.ok))' "$T/out" >/dev/null && ok \
    || bad "both services up as node kiln-0 ($(cat "$T/out"))"
expect_rc 3 "no client certificate" "$KILN_CLI_BIN" --builder "tls+tcp://127.0.0.1:$BUILDER_PORT_BUILDER_RPC" \
    --pusher "tls+tcp://127.0.0.1:$PUSHER_PORT_PUSHER_RPC" --tls-server-name kiln-0.kiln.build.svc \
    --tls-ca "$T/tls/ca.crt" status

echo "built in the pod" > "$T/ctx/a.txt"
printf 'FROM scratch\nCOPY a.txt /a.txt\n' > "$T/ctx/Dockerfile"
expect_rc 0 "remote build over mTLS" kiln build --progress=plain -t smoke:1 "$T/ctx"
D=$(cat "$T/out")
[[ "$D" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "the build printed a digest ($D; $(tail -c 300 "$T/err"))"
grep -q '^context:' "$T/err" && ok || bad "the context was streamed ($(tail -c 300 "$T/err"))"
expect_rc 0 "inspect over mTLS" kiln inspect smoke:1
[ "$(jq -r .digest "$T/out")" = "$D" ] && ok || bad "the pusher stored smoke:1 as $D"

# Pod shutdown: the pusher's preStop hook holds until the builder is gone.
[ ${#PUSHER_PRESTOP[@]} -gt 0 ] && ok || bad "the pusher has a preStop hook"
env -i "${base_env[@]}" "${PUSHER_PRESTOP[@]}" & PRE=$!
sleep 1.5 # (not an assertion: a hook that did not wait would have exited by now)
kill -0 "$PRE" 2>/dev/null && ok || bad "preStop waits while the builder runs"
kill -TERM "${PIDS[1]}"; wait "${PIDS[1]}"; rc=$?
[ "$rc" = 0 ] && ok || bad "builder exit $rc on SIGTERM"
wait "$PRE"; rc=$?
[ "$rc" = 0 ] && ok || bad "preStop exit $rc after the builder left"
ready "$PUSHER_READY" && ok || bad "the pusher serves until its own SIGTERM"
kill -TERM "${PIDS[0]}"; wait "${PIDS[0]}"; rc=$?
[ "$rc" = 0 ] && ok || bad "pusher exit $rc on SIGTERM"
if grep -q 'Sanitizer' "$T/builder.log" "$T/pusher.log"; then bad "sanitizer report"; else ok; fi
finish
