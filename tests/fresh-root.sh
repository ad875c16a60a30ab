#!/usr/bin/env bash
# The README's commands on a brand-new Debian 12 machine, as a new user would
# run them (as root):
#   tests/fresh-root.sh          deploy/quickstart.sh, deploy/quickstart.sh stop,
#                                then tests/run.sh --no-asan --no-tsan --no-fuzz --no-format
#   tests/fresh-root.sh --full   the README's two commands unchanged
#                                (deploy/quickstart.sh, then tests/run.sh)
#   --keep                       keep the root afterwards (its path is printed)
#
# The machine is a Debian 12 minbase root (+ git) made by debootstrap once and
# kept in $KILN_FRESH_ROOT_CACHE (default /var/cache/kiln-fresh-root); every
# run starts from a copy of it.  The root is entered as a container runtime
# enters one: its own mount, PID, IPC and UTS namespaces, the root made a
# mount point and pivot_root'ed into, fresh proc, sysfs, /dev (tmpfs with the
# usual nodes, devpts, shm), and an environment without LANG.  The network
# namespace is the host's (apt needs the mirror), so the registry and the
# services' HTTP ports are free ones, given through quickstart's
# KILN_REGISTRY_PORT and KILN_HTTP_PORT.
#
# The repository is cloned from this checkout's HEAD: uncommitted changes are
# not tested.  tests/run.sh inside sees KILN_FRESH_ROOT=inside and does not
# call this script again.  Exit status: 0 passed, 1 failed, 77 skipped (not
# root, or debootstrap cannot reach the mirror apt uses here).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
full=0 keep=0
for arg in "$@"; do
    case "$arg" in
    --full) full=1 ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--full] [--keep]" >&2; exit 2 ;;
    esac
done

say() { printf '==> fresh-root: %s\n' "$*"; }
skip() { echo "fresh-root: SKIPPED: $*" >&2; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, namespaces, pivot_root)"
if [ "${KILN_FRESH_ROOT:-}" = inside ]; then
    echo "fresh-root: already inside a fresh root; not recursing" >&2
    exit 0
fi
for t in debootstrap unshare pivot_root git curl python3; do
    command -v "$t" >/dev/null || skip "$t is not installed (deploy/install-deps.sh --test)"
done
git -C "$top" rev-parse --verify -q HEAD >/dev/null || skip "$top is not a git checkout"
if [ -n "$(git -C "$top" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    echo "fresh-root: note: uncommitted changes in $top are not tested (HEAD is cloned)" >&2
fi

# The Debian mirror and proxy apt uses on this machine.
mirror=
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ && u != "" { print u; exit }' "$f")
    [ -n "$mirror" ] && break
done
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && $3 ~ /^bookworm$/ { print ($2 ~ /^\[/ ? $3 : $2); exit }' || true)
fi
mirror=${KILN_FRESH_ROOT_MIRROR:-${mirror:-http://deb.debian.org/debian}}
proxy=$(apt-config shell P Acquire::http::Proxy 2>/dev/null | sed -n "s/^P='\(.*\)'$/\1/p")
if [ -n "$proxy" ]; then
    export http_proxy=$proxy
fi
curl -fsS -m 20 -o /dev/null "$mirror/dists/bookworm/Release" 2>/dev/null ||
    skip "cannot reach the Debian mirror $mirror${proxy:+ (proxy $proxy)}; set KILN_FRESH_ROOT_MIRROR"

cache=${KILN_FRESH_ROOT_CACHE:-/var/cache/kiln-fresh-root}
base=$cache/bookworm-minbase
t0=$(date +%s)
if [ ! -f "$base/.complete" ]; then
    say "debootstrap Debian 12 minbase + git from $mirror into $base (once)"
    rm -rf "$base"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include=git,ca-certificates bookworm "$base" "$mirror" \
        >"$cache/debootstrap.log" 2>&1 || {
        tail -20 "$cache/debootstrap.log" >&2
        echo "fresh-root: debootstrap failed (log: $cache/debootstrap.log)" >&2
        exit 1
    }
    rm -f "$base"/var/cache/apt/archives/*.deb
    touch "$base/.complete"
fi

root=$(mktemp -d /var/tmp/kiln-fresh-root.XXXXXX)
cleanup() {
    # Whatever the namespaces held went with them; only files remain.
    if [ "$keep" = 1 ]; then
        echo "fresh-root: kept $root" >&2
    else
        rm -rf --one-file-system "$root"
    fi
}
trap cleanup EXIT
say "copying the root to $root"
cp -a "$base/." "$root/"
rm -f "$root/.complete"
# What a new machine has configured: name resolution, apt's proxy and the
# certificate authorities its administrator added (ca-certificates, which
# install-deps.sh installs, takes them into the system bundle).
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp -L /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
if [ -n "$proxy" ]; then
    printf 'Acquire::http::Proxy "%s";\n' "$proxy" >"$root/etc/apt/apt.conf.d/01proxy"
fi
# Downloaded packages are kept between runs (only the downloads; every run
# installs them into its new root).
mkdir -p "$cache/apt-archives/partial"

say "cloning $(git -C "$top" rev-parse --short HEAD) into /root/kiln"
git clone -q --no-hardlinks "$top" "$root/root/kiln"
git -C "$root/root/kiln" checkout -q --detach "$(git -C "$top" rev-parse HEAD)"

# Free TCP ports on 127.0.0.1 for the registry and the services' HTTP
# endpoints (port and port+1), distinct from each other.
read -r reg_port http_port < <(python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
ports = []
while len(ports) < 2:
    p = random.randrange(20000, 40000, 3)
    if free(p) and free(p + 1):
        ports.append(p)
print(*ports)
PY
)

if [ "$full" = 1 ]; then
    # The README's two commands, unchanged; quickstart's services are stopped
    # afterwards (the PID namespace ends whatever is left).
    # shellcheck disable=SC2016 # expanded inside the root
    inner='deploy/quickstart.sh && tests/run.sh; rc=$?; deploy/quickstart.sh stop; exit $rc'
else
    inner='deploy/quickstart.sh && deploy/quickstart.sh stop && tests/run.sh --no-asan --no-tsan --no-fuzz --no-format'
fi

# Runs in the new namespaces, on the host's root, then pivots into $root.
# shellcheck disable=SC2016 # expanded by the inner shell
enter='set -eu
root=$1 archives=$2; shift 2
mount --make-rprivate /
mount --bind "$root" "$root"            # pivot_root needs a mount point
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs "$root/sys"
mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"
mount -t tmpfs -o nosuid,mode=755,size=64k tmpfs "$root/dev"
for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name maj min <<EOF
$n
EOF
    mknod -m 666 "$root/dev/$name" c "$maj" "$min"
done
mkdir "$root/dev/pts" "$root/dev/shm" "$root/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,nosuid,noexec devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$root/dev/shm"
mount -t mqueue -o nosuid,nodev,noexec mqueue "$root/dev/mqueue"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount --bind "$archives" "$root/var/cache/apt/archives"
cd "$root"
mkdir -p .old-root
pivot_root . .old-root
cd /
umount -l /.old-root
rmdir /.old-root
exec "$@"'

say "entering the root (mount, PID, IPC, UTS namespaces; pivot_root)"
set +e
unshare --mount --pid --fork --ipc --uts --kill-child \
    bash -c "$enter" enter "$root" "$cache/apt-archives" \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    KILN_FRESH_ROOT=inside KILN_REGISTRY_PORT="$reg_port" KILN_HTTP_PORT="$http_port" \
    bash -c "cd /root/kiln && { $inner; }"
rc=$?
set -e
t1=$(date +%s)
if [ "$rc" = 0 ]; then
    say "passed in $((t1 - t0)) s"
else
    echo "fresh-root: FAILED (exit $rc) after $((t1 - t0)) s" >&2
    exit 1
fi
