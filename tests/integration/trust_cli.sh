#!/usr/bin/env bash
# Trust boundaries of the services: ipc:// sockets are 0660 in a private run/
# whatever the umask and the mode run/ had (user nobody is refused,
# --socket-group admits a group); the CLI verifies a tls+tcp:// service's
# certificate by default (a certificate of an unrelated CA with a bogus name is
# refused with and without --tls-ca; only --tls-insecure-skip-verify accepts
# it, with a warning).
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}"
for t in openssl python3 setpriv stat; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (runs the CLI as user nobody)"; exit 77; }
id nobody >/dev/null 2>&1 || { echo "no user nobody"; exit 77; }
NOGROUP=$(id -gn nobody)

T=$(mktemp -d /tmp/kiln-trust-XXXXXX)
chmod 755 "$T" # nobody may walk to the sockets: only their own modes keep it out
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
# A copy of the CLI that nobody can run, wherever the build tree lives.
cp "$KILN_CLI_BIN" "$T/kiln"
chmod 755 "$T/kiln"
kiln() { "$T/kiln" "$@"; }
as_nobody() { setpriv --reuid nobody --regid "$NOGROUP" --clear-groups "$@"; }
wait_up() { for _ in $(seq 100); do kiln --data "$1" images >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
stop_last() { local p=${PIDS[-1]}; kill "$p"; wait "$p" 2>/dev/null; unset 'PIDS[-1]'; }

# ---- ipc socket permissions -------------------------------------------------
# A run/ an earlier setup left world-readable, and a umask of 000.
D1=$T/d1
mkdir -p "$D1/run" && chmod 0755 "$D1/run"
(umask 000; exec "$KILN_PUSHER_BIN" --data "$D1" 2>"$T/pusher1.log") & PIDS+=($!)
wait_up "$D1" && ok || bad "pusher on ipc:// starts"
[ "$(stat -c %a "$D1/run")" = 700 ] && ok || bad "run/ is 0700 ($(stat -c %a "$D1/run"))"
[ "$(stat -c %a "$D1/run/pusher.sock")" = 660 ] && ok || bad "pusher.sock is 0660 ($(stat -c %a "$D1/run/pusher.sock"))"
[ "$(stat -c %a "$D1/run/pusher-events.sock")" = 660 ] && ok || bad "pusher-events.sock is 0660"
# Even with run/ opened up again, the socket itself keeps nobody out.
chmod 0755 "$D1/run"
expect_rc 3 "nobody cannot reach the pusher" as_nobody "$T/kiln" --data "$D1" images
expect_rc 0 "root still can" kiln --data "$D1" images
stop_last

# --socket-group: the group's members get in, through a 0750 run/.
D2=$T/d2
mkdir -p "$D2/run" && chmod 0777 "$D2/run"
(umask 000; exec "$KILN_PUSHER_BIN" --data "$D2" --socket-group "$NOGROUP" 2>"$T/pusher2.log") & PIDS+=($!)
wait_up "$D2" && ok || bad "pusher with --socket-group starts"
[ "$(stat -c '%a %G' "$D2/run")" = "750 $NOGROUP" ] && ok || bad "run/ is 0750 $NOGROUP ($(stat -c '%a %G' "$D2/run"))"
[ "$(stat -c '%a %G' "$D2/run/pusher.sock")" = "660 $NOGROUP" ] && ok || bad "pusher.sock is 0660 $NOGROUP ($(stat -c '%a %G' "$D2/run/pusher.sock"))"
expect_rc 0 "a member of the socket group reaches the pusher" as_nobody "$T/kiln" --data "$D2" images
expect_rc 3 "a user outside it does not" setpriv --reuid nobody --regid 0 --clear-groups "$T/kiln" --data "$D2" images
stop_last
expect_rc 2 "--socket-group of an unknown group" "$KILN_PUSHER_BIN" --data "$T/d3" --socket-group no-such-group-kiln

# ---- paths on the service host ---------------------------------------------
# Over ipc:// paths are taken, but never Kiln's own state: not the sandbox (the
# reproduction imported $KILN_DATA/sandbox, where builds keep streamed
# secrets), not a dir holding the data dir, not the store as an export target.
D4=$T/d4
"$KILN_PUSHER_BIN" --data "$D4" 2>"$T/pusher4.log" & PIDS+=($!)
wait_up "$D4" && ok || bad "pusher for the path checks starts"
mkdir -p "$D4/sandbox/secrets" "$T/rootfs/etc"
echo s3cret-of-another-build > "$D4/sandbox/secrets/token"
echo hello > "$T/rootfs/etc/motd"
expect_rc 1 "import of \$KILN_DATA/sandbox is refused" kiln --data "$D4" import "$D4/sandbox" loot:1
grep -q "data dir" "$T/err" && ok || bad "the refusal names the data dir ($(cat "$T/err"))"
expect_rc 1 "import of a dir holding the data dir is refused" kiln --data "$D4" import "$T" loot:2
ln -s "$D4/sandbox" "$T/innocent"
expect_rc 1 "... also through a symlink" kiln --data "$D4" import "$T/innocent" loot:3
expect_rc 0 "a plain rootfs imports" kiln --data "$D4" import --quiet "$T/rootfs" ok:1
cp "$D4/store/index.json" "$T/index.before"
expect_rc 1 "export over the store's index.json is refused" kiln --data "$D4" export ok:1 "oci-archive:$D4/store/index.json"
cmp -s "$T/index.before" "$D4/store/index.json" && ok || bad "the store's index.json is unchanged"
expect_rc 1 "export into the snapshots dir is refused" kiln --data "$D4" export ok:1 "oci:$D4/snapshots/x"
expect_rc 0 "the store still works" kiln --data "$D4" images
expect_rc 0 "export outside the data dir works" kiln --data "$D4" export ok:1 "oci-archive:$T/ok.tar"
# --authfile is read by the CLI (with the client's own permissions): the
# pusher is never given the path.
printf 'not json' > "$T/notjson"
expect_rc 2 "--authfile is read by the CLI" kiln --data "$D4" pull --authfile "$T/notjson" --tls-verify=false 127.0.0.1:1/x/y:1
grep -q "not a JSON object" "$T/err" && ok || bad "the CLI says what is wrong with --authfile ($(cat "$T/err"))"
grep -q notjson "$T/pusher4.log" && bad "the pusher was given the --authfile path" || ok
stop_last

# A pusher on tcp:// takes no path at all: not for import, export or
# --cert-dir (--authfile is read by the CLI, which sends the credentials).
P=$(free_port)
"$KILN_PUSHER_BIN" --data "$T/d5" --listen "tcp://127.0.0.1:$P" --events "ipc://$T/d5-events.sock" 2>"$T/pusher5.log" & PIDS+=($!)
U=tcp://127.0.0.1:$P
for _ in $(seq 100); do kiln --pusher "$U" images >/dev/null 2>&1 && break; sleep 0.1; done
expect_rc 1 "remote import of a host path is refused" kiln --pusher "$U" import --transfer=local "$T/rootfs" r:1
grep -q "takes no paths on its host" "$T/err" && ok || bad "remote import: the refusal says why ($(cat "$T/err"))"
expect_rc 1 "remote export to a host path is refused" kiln --pusher "$U" export --transfer=local r:1 "oci-archive:$T/d5/store/index.json"
grep -q "takes no paths on its host" "$T/err" && ok || bad "remote export: the refusal says why ($(cat "$T/err"))"
echo '{"auths":{}}' > "$T/config.json"
mkdir -p "$T/certs.d"
expect_rc 5 "remote pull with --authfile goes to the registry" kiln --pusher "$U" pull --authfile "$T/config.json" 127.0.0.1:1/x/y:1
grep -q "takes no paths on its host" "$T/err" && bad "remote --authfile was refused ($(cat "$T/err"))" || ok
expect_rc 1 "remote push with --cert-dir is refused" kiln --pusher "$U" push --cert-dir "$T/certs.d" r:1 127.0.0.1:1/x/y:1
stop_last

# A builder on tcp:// takes no --cert-dir either; --authfile is the CLI's.
if [ -n "${KILN_BUILDER_BIN:-}" ]; then
    P=$(free_port)
    "$KILN_BUILDER_BIN" --data "$T/d6" --listen "tcp://127.0.0.1:$P" --events "ipc://$T/d6-events.sock" \
        --pusher "ipc://$T/d6-nopusher.sock" 2>"$T/builder6.log" & PIDS+=($!)
    B=tcp://127.0.0.1:$P
    for _ in $(seq 100); do kiln --builder "$B" build --plan "$T/ctx" >/dev/null 2>&1; [ -e "$T/d6/run" ] && break; sleep 0.1; done
    mkdir -p "$T/ctx"
    printf 'FROM scratch\nCOPY . /\n' > "$T/ctx/Dockerfile"
    expect_rc 4 "remote build with --cert-dir is refused" kiln --builder "$B" build --progress=plain --cert-dir "$T/certs.d" "$T/ctx"
    grep -q "takes no paths on its host" "$T/err" && ok || bad "remote build --cert-dir: the refusal says why ($(cat "$T/err"))"
    stop_last
fi

# ---- TLS: the CLI verifies the service's certificate ------------------------
C=$T/pki
mkdir -p "$C"
if ! (cd "$C" &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-trusted-ca -keyout ca.key -out ca.crt &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-rogue-ca -keyout rogue-ca.key -out rogue-ca.crt &&
      openssl req -newkey rsa:2048 -nodes -subj /CN=bogus.invalid -keyout rogue.key -out rogue.csr &&
      printf 'subjectAltName=DNS:bogus.invalid\n' > rogue.ext &&
      openssl x509 -req -in rogue.csr -CA rogue-ca.crt -CAkey rogue-ca.key -CAcreateserial -days 2 \
          -extfile rogue.ext -out rogue.crt &&
      openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout good.key -out good.csr &&
      printf 'subjectAltName=DNS:localhost\n' > good.ext &&
      openssl x509 -req -in good.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
          -extfile good.ext -out good.crt) >"$T/openssl.log" 2>&1; then
    echo "openssl could not make the test certificates: $(tail -3 "$T/openssl.log")"
    exit 77
fi
P=$(free_port)
"$KILN_PUSHER_BIN" --data "$T/tls" --listen "tls+tcp://127.0.0.1:$P" --events "ipc://$T/tls-events.sock" \
    --tls-cert "$C/rogue.crt" --tls-key "$C/rogue.key" --allow-insecure-tcp 2>"$T/pusher-tls.log" & PIDS+=($!)
U="tls+tcp://127.0.0.1:$P"
for _ in $(seq 100); do kiln --pusher "$U" --tls-insecure-skip-verify images >/dev/null 2>&1 && break; sleep 0.1; done
expect_rc 3 "a rogue certificate is refused by default (system CAs)" kiln --pusher "$U" images
expect_rc 3 "... with --tls-ca of another CA" kiln --pusher "$U" --tls-ca "$C/ca.crt" images
expect_rc 3 "... and with that CA and its name" kiln --pusher "$U" --tls-ca "$C/rogue-ca.crt" --tls-server-name localhost images
expect_rc 0 "--tls-insecure-skip-verify accepts it" kiln --pusher "$U" --tls-insecure-skip-verify images
grep -q 'warning: --tls-insecure-skip-verify' "$T/err" && ok || bad "skipping verification warns ($(cat "$T/err"))"
expect_rc 0 "the rogue CA with the certificate's own name is accepted" kiln --pusher "$U" --tls-ca "$C/rogue-ca.crt" --tls-server-name bogus.invalid images
stop_last

# A properly issued certificate: verified against --tls-ca, or through
# SSL_CERT_FILE standing in for the system store.
P=$(free_port)
"$KILN_PUSHER_BIN" --data "$T/tls2" --listen "tls+tcp://127.0.0.1:$P" --events "ipc://$T/tls2-events.sock" \
    --tls-cert "$C/good.crt" --tls-key "$C/good.key" --allow-insecure-tcp 2>"$T/pusher-tls2.log" & PIDS+=($!)
# The address, not the name: a root without /etc/hosts may resolve localhost
# elsewhere; the certificate's name is checked through --tls-server-name.
U="tls+tcp://127.0.0.1:$P"
LN=(--tls-server-name localhost)
for _ in $(seq 100); do kiln --pusher "$U" "${LN[@]}" --tls-ca "$C/ca.crt" images >/dev/null 2>&1 && break; sleep 0.1; done
expect_rc 0 "a certificate of the given CA is accepted" kiln --pusher "$U" "${LN[@]}" --tls-ca "$C/ca.crt" images
[ -s "$T/err" ] && bad "no warning without the skip flag ($(cat "$T/err"))" || ok
expect_rc 0 "the system CA store is used without --tls-ca" env SSL_CERT_FILE="$C/ca.crt" "$T/kiln" --pusher "$U" "${LN[@]}" images
expect_rc 3 "... where the name must match" env SSL_CERT_FILE="$C/ca.crt" "$T/kiln" --pusher "$U" images

# Import and export over tls+tcp:// stream their bytes: the source is read and
# the export written on the client's side; the pusher keeps nothing of either
# outside its store.
if command -v skopeo >/dev/null && command -v umoci >/dev/null; then
    K=(--pusher "$U" "${LN[@]}" --tls-ca "$C/ca.crt")
    R=$T/remote-rootfs
    mkdir -p "$R/etc" "$R/bin"
    echo remote > "$R/etc/motd"
    ln "$R/etc/motd" "$R/etc/motd.hard"
    ln -s ../etc/motd "$R/bin/motd-link"
    chown 1234:2345 "$R/etc/motd"
    head -c 6000000 /dev/urandom > "$R/bin/big" # several chunks
    tar -C "$R" -czf "$T/remote.tar.gz" .
    touch "$T/before"
    expect_rc 0 "remote import of a dir streams it" kiln "${K[@]}" import --quiet "$R" remote:dir
    DD=$(cat "$T/out")
    grep -q "takes no paths" "$T/err" && bad "auto import streams to a remote pusher ($(cat "$T/err"))" || ok
    expect_rc 0 "remote import of a tarball streams it" kiln "${K[@]}" import --quiet "$T/remote.tar.gz" remote:tgz
    DT=$(cat "$T/out")
    expect_rc 0 "remote export to an oci-archive" kiln "${K[@]}" export remote:dir "oci-archive:$T/remote-out.tar"
    [ "$(cat "$T/out")" = "$DD" ] && ok || bad "export prints the image digest"
    [ "$(skopeo inspect "oci-archive:$T/remote-out.tar" | jq -r .Digest)" = "$DD" ] && ok || bad "skopeo reads the received archive"
    expect_rc 0 "remote export to an OCI layout dir" kiln "${K[@]}" export remote:tgz "oci:$T/remote-layout"
    [ "$(skopeo inspect "oci:$T/remote-layout" | jq -r .Digest)" = "$DT" ] && ok || bad "skopeo reads the received layout"
    skopeo copy "oci:$T/remote-layout" "oci:$T/from-layout:y" >/dev/null 2>&1 && ok || bad "skopeo copies the layout"
    rm -rf "$T/rb" && umoci unpack --image "$T/from-layout:y" "$T/rb" >/dev/null 2>&1 && ok || bad "umoci unpacks the received layout"
    cmp -s "$T/rb/rootfs/bin/big" "$R/bin/big" && ok || bad "the streamed tarball's big file came through"
    skopeo copy "oci-archive:$T/remote-out.tar" "oci:$T/from-archive:x" >/dev/null 2>&1 && ok || bad "skopeo copies the archive"
    rm -rf "$T/ra" && umoci unpack --image "$T/from-archive:x" "$T/ra" >/dev/null 2>&1 && ok || bad "umoci unpacks the streamed dir import"
    [ "$(stat -c %u:%g "$T/ra/rootfs/etc/motd" 2>/dev/null)" = 1234:2345 ] && ok || bad "owners survive the streamed dir"
    [ "$(stat -c %i "$T/ra/rootfs/etc/motd")" = "$(stat -c %i "$T/ra/rootfs/etc/motd.hard" 2>/dev/null)" ] && ok || bad "hard links survive"
    [ "$(readlink "$T/ra/rootfs/bin/motd-link")" = ../etc/motd ] && ok || bad "symlinks survive"
    cmp -s "$T/ra/rootfs/bin/big" "$R/bin/big" && ok || bad "the big file came through"
    expect_rc 0 "a layout dir streams back in" kiln "${K[@]}" import --quiet "$T/remote-layout" remote:again
    [ "$(cat "$T/out")" = "$DT" ] && ok || bad "the re-imported layout has the same digest"
    expect_rc 1 "export into a non-empty dir is refused" kiln "${K[@]}" export remote:dir "oci:$T/remote-layout"
    [ "$(skopeo inspect "oci:$T/remote-layout" | jq -r .Digest)" = "$DT" ] && ok || bad "the refused export left the dir alone"
    # On the service host: nothing left in the transfer area, nothing written
    # outside the data dir's store, events and state.
    [ -z "$(find "$T/tls2/transfer" -type f)" ] && ok || bad "transfer area empty ($(find "$T/tls2/transfer" -type f))"
    [ -z "$(find "$T" -newer "$T/before" -type f ! -path "$T/tls2/*" ! -path "$T/remote-*" ! -path "$T/r[ab]/*" \
             ! -path "$T/from-*" ! -name out ! -name err ! -name 'pusher-*.log')" ] \
        && ok || bad "nothing written outside the store ($(find "$T" -newer "$T/before" -type f ! -path "$T/tls2/*" ! -path "$T/r[ab]/*" ! -path "$T/remote-*" ! -path "$T/from-*" | head -5))"
    ls "$T"/*.kiln-tmp-* >/dev/null 2>&1 && bad "temp files left next to the targets" || ok
fi
stop_last

finish
