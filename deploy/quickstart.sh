#!/usr/bin/env bash
# Kiln's main job on a fresh Debian 12 machine, as root:
#   deploy/quickstart.sh         install deps, build, install, start a local registry
#                                and both services, import a busybox base image, build
#                                examples/hello, push it to the registry, show the
#                                pushed manifest
#   deploy/quickstart.sh stop    stop what `start` started
# Idempotent: running it again rebuilds and restarts the services.
# Environment: KILN_DATA (default /var/lib/kiln), KILN_REGISTRY_PORT (5000),
#              KILN_HTTP_PORT (9464 for the pusher, +1 for the builder), PREFIX (/usr/local).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export KILN_DATA=${KILN_DATA:-/var/lib/kiln}
REG_PORT=${KILN_REGISTRY_PORT:-5000}
HTTP_PORT=${KILN_HTTP_PORT:-9464}
PREFIX=${PREFIX:-/usr/local}
RUN=$KILN_DATA/run
LOG=$KILN_DATA/log

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

stop_pid() { # stop_pid NAME: SIGTERM the process in $RUN/NAME.pid and wait for it
    local f=$RUN/$1.pid pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$f"
}

stop_all() {
    stop_pid kiln-builder
    stop_pid kiln-pusher
    stop_pid registry
}

if [ "${1:-start}" = stop ]; then
    stop_all
    say "stopped"
    exit 0
fi
[ "${1:-start}" = start ] || { echo "usage: $0 [start|stop]" >&2; exit 2; }

say "installing dependencies (Debian packages)"
deploy/install-deps.sh

say "building"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" >/dev/null
cmake --build build/release -j"$(nproc)" >/dev/null
cmake --install build/release >/dev/null
export PATH=$PREFIX/bin:$PATH
echo "installed $(command -v kiln) $(kiln --version)"

stop_all
mkdir -p "$RUN" "$LOG" "$KILN_DATA/registry"

say "starting a local docker-registry on 127.0.0.1:$REG_PORT"
cat > "$KILN_DATA/registry/config.yml" <<CFG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $KILN_DATA/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
CFG
setsid docker-registry serve "$KILN_DATA/registry/config.yml" >"$LOG/registry.log" 2>&1 < /dev/null &
echo $! > "$RUN/registry.pid"

say "starting kiln-pusher and kiln-builder (data dir $KILN_DATA)"
setsid kiln-pusher --http "127.0.0.1:$HTTP_PORT" >"$LOG/kiln-pusher.log" 2>&1 < /dev/null &
echo $! > "$RUN/kiln-pusher.pid"
setsid kiln-builder --http "127.0.0.1:$((HTTP_PORT + 1))" >"$LOG/kiln-builder.log" 2>&1 < /dev/null &
echo $! > "$RUN/kiln-builder.pid"

for _ in $(seq 100); do
    if kiln status >/dev/null 2>&1 && curl -fs "http://127.0.0.1:$REG_PORT/v2/" >/dev/null; then break; fi
    sleep 0.1
done

say "kiln status"
kiln status

# Imported once: a fresh rootfs has fresh mtimes, so importing it again would
# give a new base and make the example rebuild from scratch.
if kiln inspect busybox:local >/dev/null 2>&1; then
    say "busybox base image: already in the store (kiln rmi busybox:local to re-import)"
else
    say "importing a busybox base image (Debian's busybox-static; no network needed)"
    # Outside the data dir: the pusher reads no client path inside it.
    BB=$(mktemp -d "${TMPDIR:-/tmp}/kiln-busybox.XXXXXX")
    chmod 0755 "$BB"
    mkdir -p "$BB/bin" "$BB/etc" "$BB/tmp" "$BB/root" "$BB/usr/local/bin"
    cp /bin/busybox "$BB/bin/busybox"
    for a in $("$BB/bin/busybox" --list-full); do
        mkdir -p "$BB/$(dirname "$a")"; [ -e "$BB/$a" ] || ln -s /bin/busybox "$BB/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$BB/etc/passwd"
    printf 'root:x:0:\n' > "$BB/etc/group"
    chmod 1777 "$BB/tmp"
    kiln import --quiet "$BB" busybox:local
    rm -rf "$BB"
fi

IMAGE=127.0.0.1:$REG_PORT/examples/hello:1
say "building examples/hello as $IMAGE and pushing it"
kiln build --progress=plain --push --tls-verify=false -t "$IMAGE" examples/hello

say "the pushed manifest, from the registry"
curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$REG_PORT/v2/examples/hello/manifests/1"
echo
curl -fsS "http://127.0.0.1:$REG_PORT/v2/_catalog"
say "health and metrics"
echo "pusher  /readyz: $(curl -s "http://127.0.0.1:$HTTP_PORT/readyz" | tr '\n' ' ')"
echo "builder /readyz: $(curl -s "http://127.0.0.1:$((HTTP_PORT + 1))/readyz" | tr '\n' ' ')"
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | grep '^kiln_rpc_requests_total' || true
cat <<MSG

Kiln is running: logs in $LOG, sockets in $RUN, a registry on 127.0.0.1:$REG_PORT.
  kiln status            health of both services
  kiln images            the image store
  kiln events            follow every job
  $top/deploy/quickstart.sh stop    stop the services and the registry
MSG
