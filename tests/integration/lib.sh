# shellcheck shell=bash
# Shared helpers of the integration scripts (sourced; $T is the script's temp dir).
#   ok / bad MSG          count a check (bad prints MSG on stderr)
#   expect_rc WANT DESC CMD...   run CMD with stdout in $T/out, stderr in $T/err
#   free_port             a free TCP port on 127.0.0.1
#   finish                print the tally (and, after a failure, the tails of the
#                         services' logs in $T); its status is the script's
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
expect_rc() {
    local want=$1 desc=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"; local rc=$?
    if [ "$rc" -eq "$want" ]; then ok; else bad "$desc: exit $rc, want $want ($(tail -c 400 "$T/err"))"; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
finish() {
    echo "$pass passed, $fail failed"
    if [ "$fail" -ne 0 ]; then # what the services said, for the failure report
        for l in "$T"/pusher*.log "$T"/builder*.log; do
            [ -f "$l" ] && { echo "--- $(basename "$l") (last lines)"; grep -v 'level=info' "$l" | tail -25; }
        done
    fi
    [ "$fail" -eq 0 ]
}
# make_pki DIR: a CA, a server certificate for 127.0.0.1 / localhost
# (server.crt/.key) and a client certificate (client.crt/.key) it signed.
make_pki() {
    (cd "$1" && exec >pki.log 2>&1 &&
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-test-ca -keyout ca.key -out ca.crt &&
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext &&
        openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr &&
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile san.ext -out server.crt &&
        openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr &&
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out client.crt)
}
# busybox_rootfs DIR: busybox-static as an image root filesystem.
busybox_rootfs() {
    local B=$1 a
    mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root"
    cp "$(command -v busybox)" "$B/bin/busybox"
    for a in $("$B/bin/busybox" --list-full); do
        mkdir -p "$B/$(dirname "$a")"; [ -e "$B/$a" ] || ln -s /bin/busybox "$B/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$B/etc/passwd"
    printf 'root:x:0:\n' > "$B/etc/group"
    chmod 1777 "$B/tmp"
}
# gate_server PORT FILE [ADDR]: an HTTP server on ADDR:PORT (default
# 127.0.0.1) whose replies wait while FILE does not exist (a RUN step that
# fetches it blocks until the test lets it go; removing FILE closes the gate
# again); prints nothing, runs until killed.  With GATE_NETNS set it runs in
# that network namespace.
gate_server() {
    ${GATE_NETNS:+ip netns exec "$GATE_NETNS"} python3 - "$1" "$2" "${3:-127.0.0.1}" <<'PY' &
import os, socket, sys, threading, time
port, gate, addr = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(64)
def serve(c):
    c.recv(4096)
    while not os.path.exists(gate):
        time.sleep(0.05)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"); c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
}
