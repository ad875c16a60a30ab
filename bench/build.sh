#!/usr/bin/env bash
# Build benchmarks against buildah, measured in the same run on the same bases
# (each base is imported into Kiln and pushed to a local registry, from which
# buildah pulls it before timing starts, so both start from the same image):
#   1. busybox-static base, a 20-step Dockerfile (ENV, WORKDIR, COPY, 12 RUNs
#      writing small files, LABEL, EXPOSE, USER, CMD):
#        cold build: kiln build --no-cache vs
#          buildah bud --isolation chroot (overlay storage)   goal <= 0.7x
#        fully cached rebuild through the CLI                 goal < 300 ms
#        cold build on the private network (the default) vs --network none,
#          measured in the same loop                          goal <= 1.10x
#        per-RUN sandbox setup (work dir, cgroup, namespaces, network,
#          mounts: until the command starts), median, as the builder logs
#          it with KILN_DEBUG=sandbox: RUNs joining their build's network,
#          the first RUN of each build (it starts the network: namespace,
#          egress filter, pasta) and --network none       goal < 15 ms
#   3. the step cache shared through a registry, on case 2's Debian base and
#      Dockerfile (one RUN_ID for all: the same keys): an image built with
#      --cache-to type=registry is pushed; then, each on a fresh data dir
#      with fresh services, a build with --cache-from (no RUN runs: the base
#      and the cached layer are fetched, unpacked and committed) against a
#      cold build, against a fully cached local rebuild, and against
#      skopeo copy of the image's layers from the registry to an oci: dir:
#        registry-cached build / skopeo copy                  goal <= 1.5x
#      KILN_BENCH_ONLY=regcache runs this case alone (no buildah needed).
#   2. a Debian 12 base assembled offline from the host's installed packages
#      (bench/mkbase-debian.sh), a Dockerfile whose one RUN (bash) writes
#      2,000 small files (1-4 KiB, nested dirs) and 200 MB of random data, plus
#      ENV and CMD: cold build, kiln build --no-cache vs buildah bud as in 1.
#      Each run passes a new --build-arg RUN_ID that the RUN uses, to both
#      tools: the step's cache key changes, so Kiln really keeps and packs the
#      new layer (with an unchanged key, --no-cache re-runs the step but
#      commits the diff already stored under that key, packed earlier).
# One untimed warm-up build per case and tool (base snapshots, page cache);
# every timed figure is a median over RUNS runs, end to end through the CLI.
#   bench/build.sh [BUILD_DIR] [RUNS]
# Needs root, docker-registry and buildah; case 2 needs a Debian 12 host
# (dpkg, merged /usr).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
B=${1:-build/bench}
RUNS=${2:-5}
if [ ! -x "$B/builder-svc/kiln-builder" ]; then
    cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF >/dev/null
    cmake --build "$B" -j"$(nproc)" --target kiln kiln-builder kiln-pusher >/dev/null
fi
ONLY=${KILN_BENCH_ONLY:-}
for p in docker-registry skopeo $([ "$ONLY" = regcache ] || echo buildah); do
    command -v "$p" >/dev/null || { echo "bench/build.sh: $p is missing (deploy/install-deps.sh --bench)" >&2; exit 1; }
done
T=$(mktemp -d /tmp/kiln-bench-build-XXXXXX)
PIDS=()
# errexit must not cut the cleanup short: every step tolerates failure.
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    buildah --root "$T/bh/root" --runroot "$T/bh/run" --storage-driver overlay rm -a >/dev/null 2>&1 || true
    buildah --root "$T/bh/root" --runroot "$T/bh/run" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true
    umount -R "$T/bh/root/overlay" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
# A signal ends the script through exit, so the EXIT trap still cleans up.
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print NR == 0 ? "nan" : (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

export KILN_DATA=$T/data
K="$B/clients/kiln"
P=$(port)
cat > "$T/registry.yml" <<CFG
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $T/registry } }
http: { addr: 127.0.0.1:$P }
CFG
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
"$B/pusher-svc/kiln-pusher" --log-level warn 2>"$T/pusher.log" & PIDS+=($!)
# KILN_DEBUG=sandbox: one "RUN setup" line per RUN (the per-RUN setup figure).
KILN_DEBUG=sandbox "$B/builder-svc/kiln-builder" --log-level debug 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do "$K" status >/dev/null 2>&1 && curl -fs "http://127.0.0.1:$P/v2/" >/dev/null && break; sleep 0.1; done

# Case 3 (after cases 1 and 2, or alone): see the header.
# debian_ctx DIR: case 2's Dockerfile (also case 3's).
debian_ctx() {
    mkdir -p "$1"
    cat > "$1/Dockerfile" <<'DF'
ARG BASE
FROM ${BASE}
ENV DATA=/data
ARG RUN_ID
RUN bash -c 'set -e; s=$(head -c 6144 /dev/urandom | base64 -w0); for d in $(seq -w 0 39); do mkdir -p /data/small/d$d; for f in $(seq -w 0 49); do n=$((1024 + (10#$d * 50 + 10#$f) * 61 % 3072)); printf "%s\n" "${s:$((10#$f * 37)):$n}" > /data/small/d$d/f$f; done; done; head -c 200M /dev/urandom > /data/random.bin; echo "$RUN_ID" > /data/run-id'
CMD ["ls", "-l", "/data"]
DF
}
debian_base() { # imports and pushes the Debian base once
    "$K" inspect debian:local >/dev/null 2>&1 && return 0
    local deb=$T/debian-rootfs
    bash "$top/bench/mkbase-debian.sh" "$deb" >/dev/null
    "$K" import --quiet "$deb" debian:local >/dev/null
    "$K" push --quiet --tls-verify=false debian:local "127.0.0.1:$P/bench/debian:12" >/dev/null
    rm -rf "$deb"
}
# fresh_services N: a pusher and a builder on the new data dir $T/fresh-N.
FRESH=()
fresh_services() {
    local d=$T/fresh-$1
    KILN_DATA=$d "$B/pusher-svc/kiln-pusher" --log-level warn 2>>"$T/fresh.log" & FRESH+=($!)
    KILN_DATA=$d "$B/builder-svc/kiln-builder" --log-level warn 2>>"$T/fresh.log" & FRESH+=($!)
    PIDS+=("${FRESH[@]}")
    for _ in $(seq 100); do KILN_DATA=$d "$K" status >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}
fresh_stop() {
    for p in "${FRESH[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    FRESH=()
}
case_regcache() {
    debian_base
    local c3=$T/ctx-regcache reg=127.0.0.1:$P i t0
    debian_ctx "$c3"
    local args=(--progress=quiet --tls-verify=false --build-arg "BASE=$reg/bench/debian:12"
                --build-arg RUN_ID=regcache -t bench-regcache:1)
    "$K" build "${args[@]}" --cache-to "type=registry,ref=$reg/bench/cache:deb" "$c3" >/dev/null
    "$K" push --quiet --tls-verify=false bench-regcache:1 "$reg/bench/regcache:1" >/dev/null
    : > "$T/rc_cached"; : > "$T/rc_cold"; : > "$T/rc_local"; : > "$T/rc_skopeo"
    for i in $(seq "$RUNS"); do
        fresh_services "c$i"
        t0=$(now); KILN_DATA=$T/fresh-c$i "$K" build "${args[@]}" --cache-from "$reg/bench/cache:deb" "$c3" >/dev/null
        echo "$(now) - $t0" | bc -l >> "$T/rc_cached"
        fresh_stop; rm -rf "$T/fresh-c$i"
        fresh_services "w$i"
        t0=$(now); KILN_DATA=$T/fresh-w$i "$K" build "${args[@]}" "$c3" >/dev/null
        echo "$(now) - $t0" | bc -l >> "$T/rc_cold"
        fresh_stop; rm -rf "$T/fresh-w$i"
        t0=$(now); "$K" build "${args[@]}" "$c3" >/dev/null
        echo "$(now) - $t0" | bc -l >> "$T/rc_local"
        t0=$(now); skopeo copy -q --src-tls-verify=false "docker://$reg/bench/regcache:1" "oci:$T/skopeo-$i:img" >/dev/null
        echo "$(now) - $t0" | bc -l >> "$T/rc_skopeo"
        rm -rf "$T/skopeo-$i"
    done
    local rc rw rl rs
    rc=$(median < "$T/rc_cached"); rw=$(median < "$T/rc_cold"); rl=$(median < "$T/rc_local")
    rs=$(median < "$T/rc_skopeo")
    printf 'Debian 12 Dockerfile through a registry step cache, fresh data dirs, %d runs, medians:\n' "$RUNS"
    printf '  kiln build --cache-from (registry) %8.3f s\n' "$rc"
    printf '  kiln build, cold                   %8.3f s\n' "$rw"
    printf '  kiln build, fully cached locally   %8.3f s\n' "$rl"
    printf '  skopeo copy of the image           %8.3f s\n' "$rs"
    awk -v a="$rc" -v b="$rs" 'BEGIN { printf "  registry-cached build / skopeo copy %7.2fx   (goal <= 1.5x)\n", a / b }'
    awk -v a="$rc" -v b="$rw" 'BEGIN { printf "  registry-cached build / cold build  %7.2fx\n", a / b }'
}
if [ "$ONLY" = regcache ]; then
    case_regcache
    exit 0
fi

# Base image.
BB=$T/busybox
mkdir -p "$BB/bin" "$BB/etc" "$BB/tmp" "$BB/root"
cp /bin/busybox "$BB/bin/busybox"
for a in $("$BB/bin/busybox" --list-full); do
    mkdir -p "$BB/$(dirname "$a")"; [ -e "$BB/$a" ] || ln -s /bin/busybox "$BB/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$BB/etc/passwd"
printf 'root:x:0:\n' > "$BB/etc/group"
"$K" import --quiet "$BB" busybox:local >/dev/null
"$K" push --quiet --tls-verify=false busybox:local "127.0.0.1:$P/bench/busybox:1" >/dev/null
BH=(buildah --root "$T/bh/root" --runroot "$T/bh/run" --storage-driver overlay)
"${BH[@]}" pull --tls-verify=false "127.0.0.1:$P/bench/busybox:1" >/dev/null 2>&1

# A 20-step Dockerfile: RUNs writing small files, COPYs, metadata.
C=$T/ctx
mkdir -p "$C/src"
for i in $(seq 1 50); do head -c 2048 /dev/urandom | base64 > "$C/src/f$i.txt"; done
{
    echo 'ARG BASE'
    echo 'FROM ${BASE}'
    echo 'ENV APP=/app'
    echo 'WORKDIR /app'
    echo 'COPY src/ /app/src/'
    for i in $(seq 1 12); do echo "RUN mkdir -p /app/d$i && for j in 1 2 3 4 5 6 7 8 9 10; do echo \$j > /app/d$i/f\$j; done"; done
    echo 'LABEL bench=kiln'
    echo 'EXPOSE 8080'
    echo 'USER 0'
    echo 'CMD ["ls", "/app"]'
} > "$C/Dockerfile"
steps=$(grep -cvE '^(ARG|FROM)' "$C/Dockerfile")

kiln_build() { "$K" build --progress=quiet --build-arg BASE=busybox:local -t bench:1 "$@" "$C" >/dev/null; }
bh_build() { "${BH[@]}" bud --isolation chroot --layers=false --tls-verify=false --quiet \
    --build-arg "BASE=127.0.0.1:$P/bench/busybox:1" -t bench:1 "$C" >/dev/null 2>&1; }

kiln_build --no-cache # warm-up (snapshots of the base, caches of the filesystem)
bh_build
kiln_build --no-cache --network none
: > "$T/kiln_cold"; : > "$T/bh_cold"; : > "$T/kiln_cached"; : > "$T/kiln_none"
logskip=$(wc -l < "$T/builder.log") # the setup figures count the timed builds only
for _ in $(seq "$RUNS"); do
    t0=$(now); kiln_build --no-cache; echo "$(now) - $t0" | bc -l >> "$T/kiln_cold"
    t0=$(now); bh_build; echo "$(now) - $t0" | bc -l >> "$T/bh_cold"
    t0=$(now); kiln_build; echo "$(now) - $t0" | bc -l >> "$T/kiln_cached"
    t0=$(now); kiln_build --no-cache --network none; echo "$(now) - $t0" | bc -l >> "$T/kiln_none"
done
kc=$(median < "$T/kiln_cold"); bc_=$(median < "$T/bh_cold"); kr=$(median < "$T/kiln_cached")
kn=$(median < "$T/kiln_none")
printf '%d-step Dockerfile, %d runs, medians:\n' "$steps" "$RUNS"
printf '  kiln build --no-cache         %8.3f s\n' "$kc"
printf '  buildah bud --isolation chroot %7.3f s\n' "$bc_"
printf '  kiln cached rebuild (CLI)     %8.3f s   (goal < 0.300 s)\n' "$kr"
awk -v a="$kc" -v b="$bc_" 'BEGIN { printf "  cold ratio kiln/buildah       %8.2fx   (goal <= 0.7x)\n", a / b }'
# The private network (the default) against --network none, and the per-RUN
# sandbox setup of each, as the builder logs it ("private, new": the RUN
# that started its build's network).
setup_lines() { tail -n +"$((logskip + 1))" "$T/builder.log" | grep -aF "ms (network $1"; }
setup_ms() { setup_lines "$1" | sed 's/.*RUN setup \([0-9.]*\) ms.*/\1/' | median; }
setup_n() { setup_lines "$1" | wc -l; }
printf '  kiln build --no-cache --network none %8.3f s\n' "$kn"
awk -v a="$kc" -v b="$kn" 'BEGIN { printf "  cold ratio private/none network   %8.2fx   (goal <= 1.10x)\n", a / b }'
printf '  per-RUN sandbox setup, private network %7.2f ms   (goal < 15 ms; %d RUNs)\n' \
    "$(setup_ms private)" "$(setup_n private)" # both kinds of lines
printf '    first RUN of a build (starts the network) %7.2f ms   (%d builds)\n' \
    "$(setup_ms "private, new)")" "$(setup_n "private, new)")"
printf '  per-RUN sandbox setup, network none    %7.2f ms   (%d RUNs)\n' \
    "$(setup_ms "none)")" "$(setup_n "none)")"

# Case 2: a Debian 12 base (from the host's packages, no network), one RUN
# writing 2,000 small files and 200 MB of random data.
debian_base
C2=$T/ctx-debian
debian_ctx "$C2"
"${BH[@]}" pull --tls-verify=false "127.0.0.1:$P/bench/debian:12" >/dev/null 2>&1
run_id=0
kiln_deb() {
    run_id=$((run_id + 1))
    "$K" build --progress=quiet --no-cache --build-arg BASE=debian:local \
        --build-arg "RUN_ID=kiln-$run_id" -t bench-debian:1 "$C2" >/dev/null
}
bh_deb() {
    run_id=$((run_id + 1))
    "${BH[@]}" bud --isolation chroot --layers=false --tls-verify=false --quiet \
        --build-arg "BASE=127.0.0.1:$P/bench/debian:12" --build-arg "RUN_ID=buildah-$run_id" \
        -t bench-debian:1 "$C2" >/dev/null 2>&1
}
# buildah's previous result goes before each timed build (not timed).
bh_rmi() { "${BH[@]}" rmi -f bench-debian:1 >/dev/null 2>&1 || true; }
kiln_deb # warm-up
bh_deb
: > "$T/kiln_deb"; : > "$T/bh_deb"
for _ in $(seq "$RUNS"); do
    t0=$(now); kiln_deb; echo "$(now) - $t0" | bc -l >> "$T/kiln_deb"
    bh_rmi
    t0=$(now); bh_deb; echo "$(now) - $t0" | bc -l >> "$T/bh_deb"
done
kd=$(median < "$T/kiln_deb"); bd=$(median < "$T/bh_deb")
printf 'Debian 12 Dockerfile (RUN: 2,000 small files + 200 MB random), %d runs, medians:\n' "$RUNS"
printf '  kiln build --no-cache         %8.3f s\n' "$kd"
printf '  buildah bud --isolation chroot %7.3f s\n' "$bd"
awk -v a="$kd" -v b="$bd" 'BEGIN { printf "  cold ratio kiln/buildah       %8.2fx   (goal <= 0.7x)\n", a / b }'

case_regcache
