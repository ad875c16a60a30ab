#!/usr/bin/env bash
# kiln push / pull to a docker-registry on 127.0.0.1 that requires a TLS
# client certificate (http.tls.clientcas): the pair comes from --cert-dir's
# <host:port>/NAME.cert + NAME.key, checked with skopeo using the same layout.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}"
for t in docker-registry skopeo jq curl busybox openssl python3; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-reg-mtls-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

# A server CA (server certificate for IP:127.0.0.1) and a separate client CA.
P=$(free_port)
R=127.0.0.1:$P
C=$T/pki
mkdir -p "$C"
if ! (cd "$C" &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-test-ca -keyout ca.key -out ca.crt &&
      openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr &&
      printf 'subjectAltName=IP:127.0.0.1\n' > server.ext &&
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
          -extfile server.ext -out server.crt &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-client-ca \
          -keyout client-ca.key -out client-ca.pem &&
      openssl req -newkey rsa:2048 -nodes -subj /CN=kiln-client -keyout client.key -out client.csr &&
      printf 'extendedKeyUsage=clientAuth\n' > client.ext &&
      openssl x509 -req -in client.csr -CA client-ca.pem -CAkey client-ca.key -CAcreateserial \
          -days 2 -extfile client.ext -out client.cert &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=stranger \
          -keyout stranger.key -out stranger.cert) >"$T/openssl.log" 2>&1; then
    echo "openssl could not make the test certificates: $(tail -3 "$T/openssl.log")"
    exit 77
fi

cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $T/registry } }
http:
  addr: $R
  tls:
    certificate: $C/server.crt
    key: $C/server.key
    clientcas: [ $C/client-ca.pem ]
CFG
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
for _ in $(seq 100); do
    curl -s --cacert "$C/ca.crt" --cert "$C/client.cert" --key "$C/client.key" "https://$R/v2/" >/dev/null &&
        kiln status >/dev/null 2>&1 && break
    sleep 0.1
done
# The registry really insists: curl without a client certificate is turned away.
curl -fs --cacert "$C/ca.crt" "https://$R/v2/" >/dev/null 2>&1 && bad "registry serves without a client certificate" || ok

# certs.d layouts: good (CA + pair), CA only, a .cert without its .key, a
# pair the registry does not trust, an unreadable key.
mk() { mkdir -p "$T/$1/$R"; cp "$C/ca.crt" "$T/$1/$R/ca.crt"; }
mk good; cp "$C/client.cert" "$C/client.key" "$T/good/$R/"
mk caonly
mk halfpair; cp "$C/client.cert" "$T/halfpair/$R/client.cert"
mk stranger; cp "$C/stranger.cert" "$C/stranger.key" "$T/stranger/$R/"
mk badkey; cp "$C/client.cert" "$T/badkey/$R/client.cert"; ln -s "$T/nonexistent.key" "$T/badkey/$R/client.key"
# The first pair by name is used: a.cert/a.key (the good pair) before z.* (stranger).
mk sorted; cp "$C/client.cert" "$T/sorted/$R/a.cert"; cp "$C/client.key" "$T/sorted/$R/a.key"
cp "$C/stranger.cert" "$T/sorted/$R/z.cert"; cp "$C/stranger.key" "$T/sorted/$R/z.key"

mkdir -p "$T/rootfs/bin" "$T/rootfs/etc"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
echo mtls > "$T/rootfs/etc/marker"
expect_rc 0 "import" kiln import --quiet "$T/rootfs" app:1
D=$(cat "$T/out")

expect_rc 0 "push with the client certificate" kiln push --cert-dir "$T/good" app:1 "$R/sec/app:1"
[ "$(cat "$T/out")" = "$D" ] && ok || bad "push prints the manifest digest"
[ "$(skopeo inspect --cert-dir "$T/good/$R" "docker://$R/sec/app:1" 2>"$T/skopeo.err" | jq -r .Digest)" = "$D" ] &&
    ok || bad "skopeo (same cert dir) sees the pushed image ($(head -c 300 "$T/skopeo.err"))"

expect_rc 5 "push without a client certificate" kiln push --cert-dir "$T/caonly" app:1 "$R/sec/app:2"
grep -qi 'certificate' "$T/err" && grep -q 'NAME.cert' "$T/err" && ok ||
    bad "no-client-certificate failure says so ($(head -c 300 "$T/err"))"

expect_rc 5 "push with a .cert and no .key" kiln push --cert-dir "$T/halfpair" app:1 "$R/sec/app:3"
grep -q "missing key $T/halfpair/$R/client.key for client certificate $T/halfpair/$R/client.cert" "$T/err" &&
    ok || bad "half pair names the missing key ($(head -c 300 "$T/err"))"

expect_rc 5 "push with a certificate the registry does not trust" kiln push --cert-dir "$T/stranger" app:1 "$R/sec/app:4"
grep -qi 'refused the TLS client certificate' "$T/err" && ok || bad "untrusted pair is reported ($(head -c 300 "$T/err"))"

expect_rc 5 "push with an unreadable key" kiln push --cert-dir "$T/badkey" app:1 "$R/sec/app:5"
grep -q "client key $T/badkey/$R/client.key" "$T/err" && ok || bad "unreadable key is named ($(head -c 300 "$T/err"))"
grep -q 'PRIVATE KEY' "$T/err" "$T/pusher.log" && bad "key material in output" || ok

expect_rc 0 "push picks the first pair by name" kiln push --cert-dir "$T/sorted" app:1 "$R/sec/app:6"

# Pull back into an empty store through the same cert dir.
expect_rc 0 "rmi" kiln rmi app:1
expect_rc 0 "prune" kiln prune --store-only
expect_rc 0 "pull with the client certificate" kiln pull --cert-dir "$T/good" "$R/sec/app:1"
[ "$(cat "$T/out")" = "$D" ] && ok || bad "pull gives the same digest"
expect_rc 5 "pull without a client certificate" kiln pull --cert-dir "$T/caonly" "$R/sec/app:1"
expect_rc 0 "pulled image is in the store" kiln inspect "$R/sec/app:1"

# Marked insecure (no verification): the client certificate is still presented.
expect_rc 0 "insecure pull still presents the certificate" kiln pull --tls-verify=false --cert-dir "$T/good" "$R/sec/app:6"
[ "$(curl -fs --cacert "$C/ca.crt" --cert "$C/client.cert" --key "$C/client.key" \
        "https://$R/v2/sec/app/tags/list" | jq -c '.tags | sort')" = '["1","6"]' ] &&
    ok || bad "the registry holds only the tags of the pushes that had the certificate"

finish
