#!/usr/bin/env bash
# kiln build end to end through both services: a busybox base imported from
# Debian's busybox-static, the multi-stage example built, checked with skopeo
# and umoci, rebuilt from cache, a failing RUN reported with its line, pushed
# to a real docker-registry.  Needs root (namespaces, overlay).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
for t in skopeo umoci jq busybox docker-registry curl; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
SRC=$(cd "$(dirname "$0")/../.." && pwd)

T=$(mktemp -d /tmp/kiln-build-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
# Reproducible images: same inputs, same digest (also across the rebuild and the push).
export SOURCE_DATE_EPOCH=1700000000
kiln() { "$KILN_CLI_BIN" "$@"; }

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
kiln status --json > "$T/status.json" 2>/dev/null
if ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: $(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")"
    exit 77
fi

# The base image: busybox-static as a root filesystem.
B=$T/busybox
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root" "$B/usr/local/bin"
cp "$(command -v busybox)" "$B/bin/busybox"
# Applet links point at /bin/busybox inside the image (busybox --install -s
# would point them at this host path).
for a in $("$B/bin/busybox" --list-full); do
    mkdir -p "$B/$(dirname "$a")"; [ -e "$B/$a" ] || ln -s /bin/busybox "$B/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$B/etc/passwd"
printf 'root:x:0:\n' > "$B/etc/group"
chmod 1777 "$B/tmp"
expect_rc 0 "import busybox" kiln import --quiet "$B" busybox:local

cp -r "$SRC/examples/hello" "$T/ctx"
echo junk > "$T/ctx/ignored.tmp"
expect_rc 0 "build the example" kiln build --progress=plain -t hello:1 --iidfile "$T/iid" "$T/ctx"
D=$(cat "$T/out")
[[ "$D" =~ ^sha256:[0-9a-f]{64}$ ]] && ok || bad "build prints a digest ($D)"
[ "$(cat "$T/iid")" = "$D" ] && ok || bad "--iidfile holds the digest"
grep -q 'hello from kiln (version 1.0.0)' "$T/err" && ok || bad "RUN output streamed"

STORE=$KILN_DATA/store
skopeo inspect --raw --config "oci:$STORE:hello:1" > "$T/config.json" 2>"$T/err" && ok || bad "skopeo reads the built image"
jq -e '.config.User == "app" and .config.WorkingDir == "/app" and .config.Cmd == ["cat","/app/greeting.txt"]
       and (.config.ExposedPorts | has("8080/tcp")) and (.config.Env | index("APP_HOME=/app") != null)
       and .config.Labels["org.opencontainers.image.title"] == "kiln hello example"' "$T/config.json" >/dev/null \
    && ok || bad "config: User, WorkingDir, Cmd, ExposedPorts, Env, Labels"
jq -e '[.history[] | select(.empty_layer == true)] | length >= 4' "$T/config.json" >/dev/null && ok || bad "history marks metadata steps empty_layer"
kiln history --json hello:1 > "$T/hist.json" 2>/dev/null && ok || bad "kiln history"
[ "$(jq '[.[] | select(.layer)] | length' "$T/hist.json")" = "$(skopeo inspect --raw "oci:$STORE:hello:1" | jq '.layers | length')" ] \
    && [ "$(jq -r '.[0].created_by' "$T/hist.json")" = "$(jq -r '.history[-1].created_by' "$T/config.json")" ] \
    && ok || bad "kiln history: newest first, one layer per non-empty step"
umoci unpack --image "$STORE:hello:1" "$T/bundle" >/dev/null 2>&1 && ok || bad "umoci unpack"
R=$T/bundle/rootfs
grep -q 'hello from kiln (version 1.0.0)' "$R/app/greeting.txt" && ok || bad "COPY --from carried the build stage's file"
[ "$(stat -c %a "$R/usr/local/bin/greet")" = 755 ] && ok || bad "COPY --chmod=755"
[ "$(stat -c %u:%g "$R/app/greeting.txt")" = 1000:1000 ] && ok || bad "RUN chown by the new user"
grep -q '^app:x:1000:1000' "$R/etc/passwd" && ok || bad "the RUN that adds the user changed /etc/passwd"
[ ! -e "$R/app/ignored.tmp" ] && [ ! -e "$R/src" ] && ok || bad "nothing of the build stage or .dockerignore'd files"

# An unchanged rebuild runs nothing and packs nothing: the commit job of the
# first build reported packing progress, the rebuild's does not.
first_commit=$(ls -t "$KILN_DATA"/events/push/*.log | head -1)
grep -aq packing "$first_commit" && ok || bad "the first build packed its layers"
expect_rc 0 "rebuild" kiln build --progress=json -t hello:1 "$T/ctx"
re_commit=$(ls -t "$KILN_DATA"/events/push/*.log | head -1)
[ "$re_commit" != "$first_commit" ] && ! grep -aq packing "$re_commit" && ok || bad "the rebuild packed a layer"
[ "$(jq -s '[.[] | select(.step_done) | select(.step_done.cached == false)] | length' "$T/out")" = 0 ] && ok || bad "rebuild ran a step"
[ "$(jq -s -r '[.[] | select(.completed)][0].completed.digest' "$T/out")" = "$D" ] && ok || bad "rebuild gives the same digest"

# A failing RUN: exit 4, the line and the instruction.
printf 'FROM busybox:local\nRUN echo ok\nRUN echo about to fail; exit 3\n' > "$T/ctx/Dockerfile.fail"
expect_rc 4 "failing RUN" kiln build --progress=plain -f "$T/ctx/Dockerfile.fail" "$T/ctx"
grep -q ':3:' "$T/err" && grep -q 'exit 3' "$T/err" && ok || bad "failure names line 3 and the command"

# Bad input: a clear error naming the line, exit 4, and the tag keeps its image.
printf 'FROM busybox:local\nCOPY missing.txt /\n' > "$T/ctx/Dockerfile.missing"
expect_rc 4 "missing context file" kiln build --progress=plain -t hello:1 -f "$T/ctx/Dockerfile.missing" "$T/ctx"
grep -q ':2:' "$T/err" && ok || bad "missing file: line 2 named"
printf 'FROM busybox:local\nCOPY ../x /\n' > "$T/ctx/Dockerfile.escape"
expect_rc 4 "COPY ../x" kiln build --progress=plain -t hello:1 -f "$T/ctx/Dockerfile.escape" "$T/ctx"
ln -s /etc/shadow "$T/ctx/shadow-link"
printf 'FROM busybox:local\nCOPY shadow-link /stolen\n' > "$T/ctx/Dockerfile.symlink"
expect_rc 4 "context symlink to /etc/shadow" kiln build --progress=plain -t hello:1 -f "$T/ctx/Dockerfile.symlink" "$T/ctx"
rm -f "$T/ctx/shadow-link"
printf 'FROM Not/A:Valid:Ref\nRUN true\n' > "$T/ctx/Dockerfile.badbase"
expect_rc 4 "invalid base reference" kiln build --progress=plain -t hello:1 -f "$T/ctx/Dockerfile.badbase" "$T/ctx"
grep -q ':1' "$T/err" && ok || bad "bad base: line 1 named"
[ "$(kiln inspect hello:1 | jq -r .digest)" = "$D" ] && ok || bad "failed builds left hello:1 untouched"

# kill -9 of the builder in the middle of a RUN: nothing of the sandbox stays
# on the host, and the next build of the same Dockerfile succeeds.
printf 'FROM busybox:local\nRUN echo started; sleep 29; echo never\n' > "$T/ctx/Dockerfile.slow"
kiln build --progress=plain -f "$T/ctx/Dockerfile.slow" -t slow:1 "$T/ctx" >"$T/slow.out" 2>"$T/slow.err" &
CLI=$!
for _ in $(seq 100); do grep -q started "$T/slow.err" && break; sleep 0.1; done
grep -q started "$T/slow.err" && ok || bad "the slow RUN started"
kill -9 "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null
wait "$CLI"; rc=$?
[ "$rc" -ne 0 ] && ok || bad "the CLI noticed the builder died"
sleep 0.5
grep -q "$KILN_DATA" /proc/self/mountinfo && bad "a sandbox mount is left on the host" || ok
# (anchored: other processes on the machine may well run "sleep 300")
pgrep -f '^(sleep 29|/bin/sh -c echo started; sleep 29; echo never)$' >/dev/null \
    && bad "a sandbox process is left on the host" || ok
"$KILN_BUILDER_BIN" 2>>"$T/builder.log" & PIDS[1]=$!
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
printf 'FROM busybox:local\nRUN echo started; sleep 1; echo finished\n' > "$T/ctx/Dockerfile.slow"
expect_rc 0 "build after the builder was killed" kiln build --progress=plain -f "$T/ctx/Dockerfile.slow" -t slow:1 "$T/ctx"
grep -q finished "$T/err" && ok || bad "the rebuilt RUN completed"

# kiln prune drops the builder's cached steps (then unreferenced blobs); the
# next build runs its steps again and still gives the same image.
expect_rc 0 "prune" kiln prune
grep -Eq 'Removed [1-9][0-9]* cached build step' "$T/out" && ok || bad "prune removed cached steps"
expect_rc 0 "build after prune" kiln build --progress=json -t hello:1 "$T/ctx"
[ "$(jq -s '[.[] | select(.step_done) | select(.step_done.cached == false)] | length' "$T/out")" -gt 0 ] \
    && ok || bad "steps ran again after prune"
[ "$(jq -s -r '[.[] | select(.completed)][0].completed.digest' "$T/out")" = "$D" ] && ok || bad "same digest after prune"

# ADD of a URL through both services: a local http.server, credentials in
# the URL never reach the builder's log, the event logs or the CLI's output.
if command -v python3 >/dev/null; then
    HP=$(free_port)
    mkdir -p "$T/www" && printf 'fetched over http\n' > "$T/www/remote.txt"
    python3 -m http.server --bind 127.0.0.1 --directory "$T/www" "$HP" >"$T/http.log" 2>&1 & PIDS+=($!)
    for _ in $(seq 50); do curl -fs "http://127.0.0.1:$HP/remote.txt" >/dev/null && break; sleep 0.1; done
    printf 'FROM busybox:local\nADD http://fetcher:url-pa55word@127.0.0.1:%s/remote.txt /r/\nRUN cat /r/remote.txt\n' \
        "$HP" > "$T/ctx/Dockerfile.url"
    expect_rc 0 "ADD <url>" kiln build --progress=plain -t url:1 -f "$T/ctx/Dockerfile.url" "$T/ctx"
    grep -q 'fetched over http' "$T/err" && ok || bad "the RUN read the downloaded file"
    grep -q 'xxxxx@127.0.0.1' "$T/err" && ok || bad "the step is shown with the URL redacted"
    grep -rqa 'url-pa55word' "$T/out" "$T/err" "$T/builder.log" "$KILN_DATA/events" && bad "URL password leaked" || ok
    printf 'FROM busybox:local\nADD http://fetcher:url-pa55word@127.0.0.1:%s/nope /r/\n' "$HP" > "$T/ctx/Dockerfile.url404"
    expect_rc 4 "ADD <url> 404" kiln build --progress=plain -f "$T/ctx/Dockerfile.url404" "$T/ctx"
    grep -q '404' "$T/err" && ok || bad "404 reported"
    grep -rqa 'url-pa55word' "$T/out" "$T/err" "$T/builder.log" "$KILN_DATA/events" && bad "URL password leaked in a failure" || ok
fi

# --secret with a streamed context: the CLI sends the secret's content (the
# builder does not read client paths then); RUN sees it, no layer, log or
# event holds it, and nothing of it stays in the builder's data dir.
printf 'tok-9f3b2c71e5' > "$T/secret.txt"
SH=$(sha256sum < "$T/secret.txt" | cut -c1-64)  # the Dockerfile holds only the hash
printf 'FROM busybox:local\nRUN --mount=type=secret,id=tok test "$(sha256sum < /run/secrets/tok | cut -c1-64)" = %s && echo secret-ok\nRUN --mount=type=secret,id=tok,env=TOK test "$(printf %%s "$TOK" | sha256sum | cut -c1-64)" = %s\n' \
    "$SH" "$SH" > "$T/ctx/Dockerfile.secret"
# The secret file lives in a mount namespace of the CLI's own: the builder
# cannot read it by path, so the build only works if its content was sent.
mkdir -p "$T/priv"
expect_rc 0 "streamed build with a secret" unshare -m sh -c '
    mount -t tmpfs -o mode=0700 none "$1/priv" && cp "$1/secret.txt" "$1/priv/s" &&
    exec "$2" build --progress=plain --no-cache --context-transfer=stream \
        --secret "id=tok,src=$1/priv/s" -t secret:1 -f "$1/ctx/Dockerfile.secret" "$1/ctx"' \
    sh "$T" "$KILN_CLI_BIN"
grep -q 'secret-ok' "$T/err" && ok || bad "RUN read the secret sent by the CLI"
grep -rqa 'tok-9f3b2c71e5' "$T/out" "$T/err" "$T/builder.log" "$KILN_DATA/events" "$KILN_DATA/snapshots" \
    "$KILN_DATA/store" "$KILN_DATA/sandbox" 2>/dev/null && bad "the secret leaked" || ok
ls -d "$KILN_DATA"/sandbox/secrets-* >/dev/null 2>&1 && bad "a secrets dir was left behind" || ok
head -c 600000 /dev/zero > "$T/big-secret"
expect_rc 2 "a secret over 512 KiB" kiln build --progress=plain --context-transfer=stream \
    --secret "id=tok,src=$T/big-secret" -f "$T/ctx/Dockerfile.secret" "$T/ctx"

# Push the result to a real registry.
PORT=$(free_port)
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry } }
http: { addr: 127.0.0.1:$PORT }
CFG
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
expect_rc 0 "build --push" kiln build --progress=plain --push --tls-verify=false -t "127.0.0.1:$PORT/demo/hello:1" "$T/ctx"
[ "$(skopeo inspect --tls-verify=false "docker://127.0.0.1:$PORT/demo/hello:1" | jq -r .Digest)" = "$D" ] \
    && ok || bad "the pushed image is the built one"

# --push to an HTTPS registry with htpasswd auth: CA from --cert-dir, --creds.
if command -v htpasswd >/dev/null && command -v openssl >/dev/null; then
    SP=$(free_port)
    S=$T/secure
    mkdir -p "$S/certs.d/127.0.0.1:$SP"
    (cd "$S" && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-test-ca \
         -keyout ca.key -out ca.crt &&
     openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr &&
     printf 'subjectAltName=IP:127.0.0.1\n' > san.ext &&
     openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
         -extfile san.ext -out server.crt) >/dev/null 2>&1
    cp "$S/ca.crt" "$S/certs.d/127.0.0.1:$SP/ca.crt"
    htpasswd -Bbn builder 's3cret-build' > "$S/htpasswd"
    cat > "$S/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $S/data } }
auth: { htpasswd: { realm: kiln-test, path: $S/htpasswd } }
http: { addr: 127.0.0.1:$SP, tls: { certificate: $S/server.crt, key: $S/server.key } }
CFG
    docker-registry serve "$S/registry.yml" >"$S/registry.log" 2>&1 & PIDS+=($!)
    for _ in $(seq 50); do curl -s --cacert "$S/ca.crt" "https://127.0.0.1:$SP/v2/" >/dev/null && break; sleep 0.1; done
    expect_rc 5 "HTTPS push without credentials" kiln build --progress=plain --push \
        --cert-dir "$S/certs.d" -t "127.0.0.1:$SP/demo/hello:1" "$T/ctx"
    expect_rc 0 "HTTPS + auth push" kiln build --progress=plain --push --cert-dir "$S/certs.d" \
        --creds 'builder:s3cret-build' -t "127.0.0.1:$SP/demo/hello:1" "$T/ctx"
    [ "$(skopeo inspect --cert-dir "$S/certs.d/127.0.0.1:$SP" --creds 'builder:s3cret-build' \
         "docker://127.0.0.1:$SP/demo/hello:1" | jq -r .Digest)" = "$D" ] && ok || bad "HTTPS push is the built image"
    grep -rqa 's3cret-build' "$T/builder.log" "$T/pusher.log" "$KILN_DATA/events" && bad "credentials leaked" || ok
fi

finish
