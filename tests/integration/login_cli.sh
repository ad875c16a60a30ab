#!/usr/bin/env bash
# kiln login / logout against a docker-registry with htpasswd auth (over
# TLS): credentials are checked, stored in the Docker config.json (or given
# to a credential helper named by credHelpers), and a push then works with
# only the stored credentials; logout removes them; the secret appears in no
# output, log or event.  The pusher runs over ipc:// on this host and reads
# the same REGISTRY_AUTH_FILE as the CLI.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}"
for t in docker-registry skopeo jq curl busybox htpasswd openssl base64; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-login-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
export REGISTRY_AUTH_FILE=$T/auth/config.json
kiln() { "$KILN_CLI_BIN" "$@"; }
SECRET='s3cret-login-pw'

P=$(free_port)
R=127.0.0.1:$P
mkdir -p "$T/certs.d/$R"
(cd "$T" && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-test-ca \
     -keyout ca.key -out ca.crt &&
 openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr &&
 printf 'subjectAltName=IP:127.0.0.1\n' > san.ext &&
 openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
     -extfile san.ext -out server.crt) >/dev/null 2>&1
cp "$T/ca.crt" "$T/certs.d/$R/ca.crt"
htpasswd -Bbn alice "$SECRET" > "$T/htpasswd"
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry } }
auth: { htpasswd: { realm: kiln-test, path: $T/htpasswd } }
http: { addr: $R, tls: { certificate: $T/server.crt, key: $T/server.key } }
CFG
# (docker-registry reads REGISTRY_* variables as configuration: not ours)
env -u REGISTRY_AUTH_FILE docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
# A credential helper for the credHelpers case, on the PATH of both.
mkdir -p "$T/bin"
cat > "$T/bin/docker-credential-kilntest" <<'SH'
#!/bin/sh
f="$KILN_TEST_HELPER_FILE"
case "$1" in
store) cat > "$f" ;;
get) [ -f "$f" ] || exit 1; jq '{Username: .Username, Secret: .Secret}' "$f" ;;
erase) rm -f "$f" ;;
*) exit 2 ;;
esac
SH
chmod +x "$T/bin/docker-credential-kilntest"
export PATH=$T/bin:$PATH KILN_TEST_HELPER_FILE=$T/helper.json
"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
for _ in $(seq 100); do
    curl -s --cacert "$T/ca.crt" "https://$R/v2/" >/dev/null && kiln status --json 2>/dev/null | jq -e .pusher.reachable >/dev/null && break
    sleep 0.1
done
mkdir -p "$T/rootfs/bin"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
expect_rc 0 "import" kiln import --quiet "$T/rootfs" app:1
D=$(cat "$T/out")
CD=(--cert-dir "$T/certs.d")

expect_rc 5 "push before login" kiln push "${CD[@]}" app:1 "$R/team/app:1"
expect_rc 5 "login with a wrong password" sh -c "printf wrong | \"\$0\" login -u alice --password-stdin --cert-dir '$T/certs.d' $R" "$KILN_CLI_BIN"
[ ! -e "$REGISTRY_AUTH_FILE" ] && ok || bad "a rejected login stored something"
expect_rc 2 "login with both password flags" kiln login -u alice -p x --password-stdin "$R"
expect_rc 2 "login without a registry" kiln login -u alice --password-stdin

printf '%s\n' "$SECRET" >"$T/pw"
expect_rc 0 "login --password-stdin" sh -c '"$0" login -u alice --password-stdin --cert-dir "$1" "$2" <"$3"' "$KILN_CLI_BIN" "$T/certs.d" "$R" "$T/pw"
grep -q 'Login Succeeded' "$T/out" && ok || bad "login says it succeeded"
[ "$(jq -r --arg r "$R" '.auths[$r].auth' "$REGISTRY_AUTH_FILE" | base64 -d)" = "alice:$SECRET" ] && ok || bad "auths entry in config.json"
[ "$(stat -c %a "$REGISTRY_AUTH_FILE")" = 600 ] && ok || bad "config.json is 0600"
expect_rc 0 "push with only the stored credentials" kiln push "${CD[@]}" app:1 "$R/team/app:1"
[ "$(skopeo inspect --cert-dir "$T/certs.d/$R" --creds "alice:$SECRET" "docker://$R/team/app:1" | jq -r .Digest)" = "$D" ] \
    && ok || bad "skopeo sees the pushed image"
expect_rc 0 "logout" kiln logout "$R"
jq -e --arg r "$R" '.auths | has($r) | not' "$REGISTRY_AUTH_FILE" >/dev/null && ok || bad "logout removed the entry"
expect_rc 5 "push after logout" kiln push "${CD[@]}" app:1 "$R/team/app:2"
expect_rc 0 "logout again" kiln logout "$R"
grep -q 'Not logged in' "$T/err" && ok || bad "logout again says not logged in"

# credHelpers: the helper keeps the secret, config.json does not.
jq -n --arg r "$R" '{credHelpers: {($r): "kilntest"}}' >"$REGISTRY_AUTH_FILE"
expect_rc 0 "login through credHelpers" sh -c '"$0" login -u alice --password-stdin --cert-dir "$1" "$2" <"$3"' "$KILN_CLI_BIN" "$T/certs.d" "$R" "$T/pw"
[ "$(jq -r .Secret "$T/helper.json" 2>/dev/null)" = "$SECRET" ] && ok || bad "the helper stored the secret"
grep -q "$SECRET" "$REGISTRY_AUTH_FILE" && bad "config.json holds the secret" || ok
expect_rc 0 "push with the helper's credentials" kiln push "${CD[@]}" app:1 "$R/team/app:3"
expect_rc 0 "logout through the helper" kiln logout "$R"
[ ! -e "$T/helper.json" ] && ok || bad "the helper erased the secret"

# credsStore: the same, for every registry without a credHelpers entry;
# other settings in config.json are kept.
jq -n '{credsStore: "kilntest", experimental: "enabled"}' >"$REGISTRY_AUTH_FILE"
expect_rc 0 "login through credsStore" sh -c '"$0" login -u alice --password-stdin --cert-dir "$1" "$2" <"$3"' "$KILN_CLI_BIN" "$T/certs.d" "$R" "$T/pw"
[ "$(jq -r .Secret "$T/helper.json" 2>/dev/null)" = "$SECRET" ] && ok || bad "credsStore kept the secret"
jq -e '.experimental == "enabled" and .credsStore == "kilntest"' "$REGISTRY_AUTH_FILE" >/dev/null && ok || bad "other settings kept"
grep -q "$SECRET" "$REGISTRY_AUTH_FILE" && bad "config.json holds the secret" || ok
expect_rc 0 "push with the credsStore's credentials" kiln push "${CD[@]}" app:1 "$R/team/app:4"
expect_rc 0 "logout through credsStore" kiln logout "$R"
[ ! -e "$T/helper.json" ] && ok || bad "credsStore erased the secret"

grep -rqa "$SECRET" "$T/pusher.log" "$T/out" "$T/err" "$KILN_DATA/events" && bad "the secret leaked" || ok
finish
