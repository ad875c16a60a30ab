#!/usr/bin/env bash
# Registry credentials are the client's: the CLI reads its own Docker config
# (kiln login's file, $REGISTRY_AUTH_FILE, credential helpers on the
# client's PATH) and sends what it holds for the registries of the request.
# A pusher over tls+tcp:// with no credentials of its own pushes with them;
# a pusher whose environment holds other credentials never lends them (a
# client with none gets the registry's refusal, one with wrong ones is not
# rescued); over ipc:// the client's REGISTRY_AUTH_FILE is the one used; a
# remote build pulls its FROM image from the authenticated registry and
# pushes there.  The secret appears in no log, event or output.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}"
for t in docker-registry jq curl busybox htpasswd openssl python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-creds-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
SECRET='s3cret-client-pw'
OPSECRET='s3cret-operator-pw'
# The CLI's environment: nothing but what each check sets.
kiln() { env -u REGISTRY_AUTH_FILE -u DOCKER_CONFIG HOME="$T/client-home" "$KILN_CLI_BIN" "$@"; }
stop_last() { local p=${PIDS[-1]}; kill "$p"; wait "$p" 2>/dev/null; unset 'PIDS[-1]'; }
mkdir -p "$T/client-home" "$T/op-home" "$T/empty-home" "$T/cfg"

# A plain-HTTP registry on loopback with htpasswd users alice (the client)
# and bob (the pusher's operator).
P=$(free_port)
R=127.0.0.1:$P
{ htpasswd -Bbn alice "$SECRET"; htpasswd -Bbn bob "$OPSECRET"; } > "$T/htpasswd"
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry } }
auth: { htpasswd: { realm: kiln-test, path: $T/htpasswd } }
http: { addr: $R }
CFG
env -u REGISTRY_AUTH_FILE docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -s "http://$R/v2/" >/dev/null && break; sleep 0.1; done

auth() { printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$R" "$(printf '%s' "$1" | base64 -w0)"; }
auth "alice:$SECRET" > "$T/cfg/alice.json"
auth "alice:wrong-pw" > "$T/cfg/wrong.json"
echo '{}' > "$T/cfg/none.json"
# The operator's credentials (valid ones) in every place a pusher could look.
mkdir -p "$T/op-home/.docker"
auth "bob:$OPSECRET" > "$T/op-home/.docker/config.json"
cp "$T/op-home/.docker/config.json" "$T/op.json"

mkdir -p "$T/pki" && make_pki "$T/pki" || { echo "openssl could not make certificates"; exit 77; }
mkdir -p "$T/rootfs/bin"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"

# tls_pusher NAME ENV...: a kiln-pusher on tls+tcp:// with the environment
# ENV; sets U and K (the CLI's flags to reach it).
tls_pusher() {
    local name=$1; shift
    local port; port=$(free_port)
    env -i PATH="$PATH" "$@" "$KILN_PUSHER_BIN" --data "$T/$name" --listen "tls+tcp://127.0.0.1:$port" \
        --events "ipc://$T/$name-events.sock" --tls-cert "$T/pki/server.crt" --tls-key "$T/pki/server.key" --allow-insecure-tcp \
        2>"$T/pusher-$name.log" & PIDS+=($!)
    U="tls+tcp://127.0.0.1:$port"
    K=(--pusher "$U" --tls-ca "$T/pki/ca.crt" --tls-server-name localhost)
    for _ in $(seq 100); do kiln "${K[@]}" images >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

# ---- a remote pusher with no credentials of its own ------------------------
tls_pusher bare HOME="$T/empty-home" && ok || bad "pusher on tls+tcp:// starts"
expect_rc 0 "remote import" kiln "${K[@]}" import --quiet "$T/rootfs" app:1
D=$(cat "$T/out")
expect_rc 5 "push before login (the pusher has no credentials)" kiln "${K[@]}" push app:1 "$R/team/app:0"
printf '%s\n' "$SECRET" > "$T/pw"
login_remote() { env -u REGISTRY_AUTH_FILE DOCKER_CONFIG="$T/dc" "$KILN_CLI_BIN" "${K[@]}" login -u alice --password-stdin "$R" <"$T/pw"; }
expect_rc 0 "kiln login through the remote pusher" login_remote
[ -s "$T/dc/config.json" ] && ok || bad "login stored the client's credentials"
expect_rc 0 "remote push with only the client's stored credentials" \
    env -u REGISTRY_AUTH_FILE DOCKER_CONFIG="$T/dc" "$KILN_CLI_BIN" "${K[@]}" push app:1 "$R/team/app:1"
[ "$(curl -s -u "alice:$SECRET" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -o /dev/null -w '%{http_code}' "http://$R/v2/team/app/manifests/1")" = 200 ] && ok || bad "the registry has the pushed image"
expect_rc 0 "remote pull with the client's credentials" \
    env -u REGISTRY_AUTH_FILE DOCKER_CONFIG="$T/dc" "$KILN_CLI_BIN" "${K[@]}" pull --quiet "$R/team/app:1"
[ "$(cat "$T/out")" = "$D" ] && ok || bad "the pulled digest is the pushed one"
expect_rc 0 "remote push with --authfile (read by the CLI)" kiln "${K[@]}" push --authfile "$T/cfg/alice.json" app:1 "$R/team/app:2"

# A credential helper on the client's PATH only.
mkdir -p "$T/bin"
cat > "$T/bin/docker-credential-kilntest" <<'SH'
#!/bin/sh
[ "$1" = get ] || exit 2
read -r host
[ "$host" = "$KILN_TEST_HOST" ] || exit 1
printf '{"Username":"alice","Secret":"%s"}\n' "$KILN_TEST_SECRET"
SH
chmod +x "$T/bin/docker-credential-kilntest"
jq -n --arg r "$R" '{credHelpers: {($r): "kilntest"}}' > "$T/cfg/helper.json"
expect_rc 0 "remote push with the client's credential helper" \
    env PATH="$T/bin:$PATH" KILN_TEST_HOST="$R" KILN_TEST_SECRET="$SECRET" \
    "$KILN_CLI_BIN" "${K[@]}" push --authfile "$T/cfg/helper.json" app:1 "$R/team/app:3"
jq -n '{credsStore: "kilntest"}' > "$T/cfg/store.json"
expect_rc 0 "remote pull with the client's credsStore" \
    env PATH="$T/bin:$PATH" KILN_TEST_HOST="$R" KILN_TEST_SECRET="$SECRET" REGISTRY_AUTH_FILE="$T/cfg/store.json" \
    "$KILN_CLI_BIN" "${K[@]}" pull --quiet "$R/team/app:3"
stop_last

# ---- a remote pusher whose environment holds the operator's credentials ----
tls_pusher op HOME="$T/op-home" REGISTRY_AUTH_FILE="$T/op.json" DOCKER_CONFIG="$T/op-home/.docker" \
    && ok || bad "pusher with the operator's credentials starts"
expect_rc 0 "remote import" kiln "${K[@]}" import --quiet "$T/rootfs" app:1
expect_rc 0 "the client's credentials are used" \
    env REGISTRY_AUTH_FILE="$T/cfg/alice.json" "$KILN_CLI_BIN" "${K[@]}" push app:1 "$R/team/op:1"
expect_rc 5 "a client with wrong credentials is not rescued by the operator's" \
    env REGISTRY_AUTH_FILE="$T/cfg/wrong.json" "$KILN_CLI_BIN" "${K[@]}" push app:1 "$R/team/op:2"
expect_rc 5 "a client with none gets the registry's refusal" \
    env REGISTRY_AUTH_FILE="$T/cfg/none.json" "$KILN_CLI_BIN" "${K[@]}" push app:1 "$R/team/op:3"
grep -qi "authenticat\|401\|credentials" "$T/err" && ok || bad "the refusal is about authentication ($(cat "$T/err"))"
expect_rc 5 "... nor with no config file at all" kiln "${K[@]}" pull "$R/team/app:1"
stop_last

# ---- ipc://: the client's REGISTRY_AUTH_FILE, not the pusher's -------------
# (the pusher's own REGISTRY_AUTH_FILE holds wrong credentials for alice,
# its ~/.docker/config.json the operator's valid ones)
export KILN_DATA=$T/local
env -i PATH="$PATH" HOME="$T/op-home" REGISTRY_AUTH_FILE="$T/cfg/wrong.json" KILN_DATA="$KILN_DATA" \
    "$KILN_PUSHER_BIN" 2>"$T/pusher-local.log" & PIDS+=($!)
for _ in $(seq 100); do kiln images >/dev/null 2>&1 && break; sleep 0.1; done
expect_rc 0 "import over ipc" kiln import --quiet "$T/rootfs" app:1
expect_rc 0 "REGISTRY_AUTH_FILE set only for the client works over ipc" \
    env REGISTRY_AUTH_FILE="$T/cfg/alice.json" HOME="$T/client-home" "$KILN_CLI_BIN" push app:1 "$R/team/local:1"
expect_rc 5 "the pusher's own REGISTRY_AUTH_FILE is not used for the client" kiln push app:1 "$R/team/local:2"

# ---- a remote build: FROM on the authenticated registry, pushed there ------
if [ -n "${KILN_BUILDER_BIN:-}" ] && [ "$(id -u)" = 0 ]; then
    BP=$(free_port); BE=$(free_port)
    env -i PATH="$PATH" HOME="$T/op-home" REGISTRY_AUTH_FILE="$T/op.json" KILN_DATA="$KILN_DATA" \
        "$KILN_BUILDER_BIN" --listen "tcp://127.0.0.1:$BP" --events "tcp://127.0.0.1:$BE" \
        2>"$T/builder.log" & PIDS+=($!)
    B=tcp://127.0.0.1:$BP
    for _ in $(seq 100); do kiln --builder "$B" status >/dev/null 2>&1 && break; sleep 0.1; done
    mkdir -p "$T/ctx"
    echo hello > "$T/ctx/a.txt"
    printf 'FROM %s/team/app:1\nCOPY a.txt /\n' "$R" > "$T/ctx/Dockerfile"
    expect_rc 5 "a remote build without the client's credentials cannot pull its base" \
        kiln --builder "$B" build --pull --progress=plain "$T/ctx"
    expect_rc 0 "a remote build pulls its base and pushes with the client's credentials" \
        env REGISTRY_AUTH_FILE="$T/cfg/alice.json" "$KILN_CLI_BIN" --builder "$B" build --pull \
        --progress=plain -t "$R/team/built:1" --push "$T/ctx"
    [ "$(curl -s -u "alice:$SECRET" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        -o /dev/null -w '%{http_code}' "http://$R/v2/team/built/manifests/1")" = 200 ] && ok || bad "the build's push reached the registry"
else
    echo "skipping the remote build (needs root and KILN_BUILDER_BIN)"
fi

# ---- the secret is nowhere ---------------------------------------------------
for s in "$SECRET" "$OPSECRET" "$(printf 'alice:%s' "$SECRET" | base64 -w0)"; do
    grep -rqa -- "$s" "$T"/*.log "$T/out" "$T/err" "$T/bare" "$T/op" "$KILN_DATA" \
        && bad "a secret leaked into a log, event or the store" || ok
done
finish
