#!/usr/bin/env bash
# The client's config file ($XDG_CONFIG_HOME/kiln/config.json): endpoints,
# TLS files and the default progress are taken from it; flag > environment >
# file > default, as `kiln config [--json]` shows with each setting's
# source; a malformed file, an unknown key or a wrong type is an error naming
# the file and the line or key.  FROM scratch builds only: no root needed.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
for t in jq openssl python3 curl; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-config-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
unset KILN_PROGRESS BUILDKIT_PROGRESS KILN_BUILDER KILN_PUSHER
export XDG_CONFIG_HOME=$T/xdg
CF=$XDG_CONFIG_HOME/kiln/config.json
mkdir -p "$(dirname "$CF")"
kiln() { "$KILN_CLI_BIN" "$@"; }
src() { jq -r --arg k "$1" '.[$k].source' "$T/out"; }
val() { jq -r --arg k "$1" '.[$k].value' "$T/out"; }

# Nothing set: defaults.
expect_rc 0 "kiln config --json, no file" kiln config --json
[ "$(src builder)" = default ] && [ "$(val builder)" = "ipc://$KILN_DATA/run/builder.sock" ] \
    && [ "$(jq -r .config_file "$T/out")" = "$CF" ] && ok || bad "defaults ($(cat "$T/out"))"

# Services on tls+tcp:// (pusher) and tcp:// (builder), named only by the file.
make_pki "$T" || { echo "openssl failed"; exit 77; }
cp "$T/ca.crt" "$T/client.crt" "$T/client.key" "$(dirname "$CF")/"
PP=$(free_port) BP=$(free_port)
# (The builder commits through the pusher's ipc:// socket, as in a pod.)
"$KILN_PUSHER_BIN" --listen "ipc://$T/pusher.sock" --listen "tls+tcp://127.0.0.1:$PP" \
    --events "ipc://$T/pusher-events.sock" \
    --tls-cert "$T/server.crt" --tls-key "$T/server.key" --tls-ca "$T/ca.crt" 2>"$T/pusher.log" & PIDS+=($!)
BE=$(free_port)
"$KILN_BUILDER_BIN" --listen "tcp://127.0.0.1:$BP" --events "tcp://127.0.0.1:$BE" \
    --pusher "ipc://$T/pusher.sock" 2>"$T/builder.log" & PIDS+=($!)
cat > "$CF" <<EOF
{
  "builder": "tcp://127.0.0.1:$BP",
  "pusher": "tls+tcp://127.0.0.1:$PP",
  "timeout": 20000,
  "progress": "json",
  "tls": {"ca": "ca.crt", "cert": "client.crt", "key": "client.key", "server_name": "localhost"}
}
EOF
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
expect_rc 0 "kiln status through the file's endpoints and TLS files" kiln status --json
jq -e '.builder.reachable != false and .pusher.reachable != false' "$T/out" >/dev/null && ok || bad "both services reached ($(head -c 300 "$T/out"))"
expect_rc 0 "kiln config --json, file" kiln config --json
[ "$(src builder)" = "$CF" ] && [ "$(val pusher)" = "tls+tcp://127.0.0.1:$PP" ] && [ "$(val timeout)" = 20000 ] \
    && [ "$(val tls.ca)" = "$(dirname "$CF")/ca.crt" ] && [ "$(src progress)" = "$CF" ] \
    && ok || bad "settings from the file, relative TLS files next to it ($(cat "$T/out"))"
expect_rc 0 "kiln config (table)" kiln config
grep -q "^builder  *tcp://127.0.0.1:$BP  *$CF\$" "$T/out" && ok || bad "the table names value and source ($(cat "$T/out"))"

# Without the file's TLS files, the pusher is not reached.
mv "$CF" "$CF.off"
expect_rc 3 "no file: tls pusher unreachable" kiln --builder "tcp://127.0.0.1:$BP" --pusher "tls+tcp://127.0.0.1:$PP" images
mv "$CF.off" "$CF"

# Precedence: flag > environment > file.
KILN_BUILDER=tcp://127.0.0.1:1 expect_rc 0 "env over file" kiln config --json
[ "$(src builder)" = "env KILN_BUILDER" ] && [ "$(val builder)" = tcp://127.0.0.1:1 ] && ok || bad "env wins over the file"
KILN_BUILDER=tcp://127.0.0.1:1 expect_rc 0 "flag over env" kiln --builder "tcp://127.0.0.1:2" --timeout 500 config --json
[ "$(src builder)" = flag ] && [ "$(val builder)" = tcp://127.0.0.1:2 ] && [ "$(src timeout)" = flag ] && ok || bad "the flag wins"
KILN_BUILDER=tcp://127.0.0.1:1 expect_rc 3 "the env's builder is the one dialled" kiln --timeout 1000 status

# The file's progress mode is the build's default; the environment beats it.
C=$T/ctx
mkdir -p "$C"
echo hi > "$C/a.txt"
printf 'FROM scratch\nCOPY a.txt /\n' > "$C/Dockerfile"
expect_rc 0 "build with the file's progress" kiln build -t cfg:1 "$C"
jq -e -s 'length > 2 and all(.[]; has("seq"))' "$T/out" >/dev/null && ok || bad "progress json from the file ($(head -c 200 "$T/out"))"
KILN_PROGRESS=quiet expect_rc 0 "env progress over file" kiln build -t cfg:1 "$C"
[[ "$(cat "$T/out")" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "KILN_PROGRESS beats the file"

# Event endpoints: discovered from Status unless configured.
expect_rc 0 "events default" kiln config --json
[ "$(src builder_events)" = default ] && [ "$(val builder_events)" = null ] && ok || bad "builder_events unset by default"
jq --arg e "tcp://127.0.0.1:$BE" '.builder_events = $e' "$CF" > "$T/ev.json" && cp "$T/ev.json" "$CF"
expect_rc 0 "events from the file" kiln config --json
[ "$(src builder_events)" = "$CF" ] && [ "$(val builder_events)" = "tcp://127.0.0.1:$BE" ] && ok || bad "builder_events from the file"
KILN_BUILDER_EVENTS=bogus expect_rc 2 "a bad KILN_BUILDER_EVENTS" kiln status
grep -q 'builder_events (env KILN_BUILDER_EVENTS)' "$T/err" && ok || bad "names the setting and its source ($(cat "$T/err"))"
KILN_PROGRESS=plain expect_rc 0 "build following the configured events endpoint" kiln build -t cfg:2 "$C"
grep -q '^#1 ' "$T/err" && ok || bad "build events followed ($(head -c 300 "$T/err"))"

# insecure_registries: a registry with a certificate of an unknown CA is
# reached only when listed (as with --tls-verify=false), and an explicit
# --tls-verify=true wins over the list.
if command -v docker-registry >/dev/null; then
    RP=$(free_port)
    printf 'version: 0.1\nlog: { level: error }\nstorage: { filesystem: { rootdirectory: %s } }\nhttp:\n  addr: 127.0.0.1:%s\n  tls: { certificate: %s, key: %s }\n' \
        "$T/registry" "$RP" "$T/server.crt" "$T/server.key" > "$T/registry.yml"
    docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
    for _ in $(seq 100); do curl -s --cacert "$T/ca.crt" "https://127.0.0.1:$RP/v2/" >/dev/null && break; sleep 0.1; done
    mkdir -p "$T/tiny/etc" && echo tiny > "$T/tiny/etc/tiny"
    expect_rc 0 "import a tiny image" kiln import --quiet "$T/tiny" tiny:1
    expect_rc 5 "unknown CA, not listed" kiln push --quiet tiny:1 "127.0.0.1:$RP/tiny:1"
    jq --arg r "127.0.0.1:$RP" '.insecure_registries = ["other.example:5000", $r]' "$CF" > "$T/ins.json" && cp "$T/ins.json" "$CF"
    expect_rc 0 "listed in insecure_registries" kiln push --quiet tiny:1 "127.0.0.1:$RP/tiny:1"
    expect_rc 5 "--tls-verify=true wins over the list" kiln push --quiet --tls-verify=true tiny:1 "127.0.0.1:$RP/tiny:2"
    expect_rc 0 "kiln config shows the list" kiln config --json
    [ "$(val insecure_registries)" = "other.example:5000,127.0.0.1:$RP" ] && [ "$(src insecure_registries)" = "$CF" ] \
        && ok || bad "insecure_registries in kiln config ($(jq -c .insecure_registries "$T/out"))"
    jq 'del(.insecure_registries)' "$CF" > "$T/ins.json" && cp "$T/ins.json" "$CF"
    KILN_INSECURE_REGISTRIES="127.0.0.1:$RP" expect_rc 0 "KILN_INSECURE_REGISTRIES" kiln pull --quiet "127.0.0.1:$RP/tiny:1"
    printf '{"insecure_registries": "127.0.0.1:%s"}\n' "$RP" > "$T/ins.json"
    XDG_CONFIG_HOME=$T/ins-xdg; mkdir -p "$XDG_CONFIG_HOME/kiln"; cp "$T/ins.json" "$XDG_CONFIG_HOME/kiln/config.json"
    expect_rc 2 "insecure_registries must be an array" kiln config
    grep -q '"insecure_registries" wants an array' "$T/err" && ok || bad "names insecure_registries ($(cat "$T/err"))"
    XDG_CONFIG_HOME=$T/xdg
else
    echo "docker-registry missing: insecure_registries not checked"
fi

# Broken files: clear errors, exit 2, naming the file and the line or key.
cp "$CF" "$T/good.json"
printf '{\n  "builder": "tcp://127.0.0.1:1",\n  "pusher": \n}\n' > "$CF"
expect_rc 2 "malformed JSON" kiln config
grep -qF "$CF:4" "$T/err" && ok || bad "names file and line ($(cat "$T/err"))"
expect_rc 0 "a broken file does not break the completion script" kiln completion bash
printf '{"buider": "tcp://127.0.0.1:1"}\n' > "$CF"
expect_rc 2 "unknown key" kiln status
grep -qF "$CF" "$T/err" && grep -q '"buider"' "$T/err" && ok || bad "names file and key ($(cat "$T/err"))"
printf '{"timeout": "soon"}\n' > "$CF"
expect_rc 2 "wrong type" kiln config
grep -q '"timeout" wants' "$T/err" && ok || bad "names the key ($(cat "$T/err"))"
printf '{"tls": {"ca": 3}}\n' > "$CF"
expect_rc 2 "wrong type in tls" kiln config
grep -q '"tls.ca" wants' "$T/err" && ok || bad "names tls.ca ($(cat "$T/err"))"
jq '.progress = "loud"' "$T/good.json" > "$CF"
expect_rc 2 "bad progress in the file" kiln build -t cfg:1 "$C"
grep -qF "$CF" "$T/err" && grep -q progress "$T/err" && ok || bad "names the file's progress ($(cat "$T/err"))"

finish
