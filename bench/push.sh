#!/usr/bin/env bash
# Push of an image (busybox base + one SIZE_MB random layer) to a local
# docker-registry, in the same run:
#   kiln     commit (packing the layer) + push, through kiln-registry-tool
#   buildah  commit + push of the same content (buildah compresses on push)
#   skopeo   copy of Kiln's already packed image from the OCI store
# and Kiln's re-push time and peak RSS while pushing.
# Goals: kiln <= 0.5x buildah (packing included), re-push < 0.05 s,
# peak RSS < 64 MiB.
#   bench/push.sh [BUILD_DIR] [SIZE_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/bench}
MB=${2:-200}
TOOL="$B/pusher-svc/registry/kiln-registry-tool"
if [ ! -x "$TOOL" ]; then
    cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF >/dev/null
    cmake --build "$B" -j"$(nproc)" --target kiln-registry-tool >/dev/null
fi
for p in docker-registry skopeo; do
    command -v $p >/dev/null || { echo "bench/push.sh: $p is missing" >&2; exit 1; }
done
# Lower case: buildah derives names from the oci: path.
T=/tmp/kiln-bench-push-$$-$RANDOM
mkdir -m 700 "$T"
RPID=
cleanup() {
    [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
    if command -v buildah >/dev/null && [ -d "$T/bh" ]; then
        buildah --root "$T/bh/root" --runroot "$T/bh/run" --storage-driver vfs rm -a \
            >/dev/null 2>&1 || true
    fi
    rm -rf "$T"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# The registry: started by hand on 127.0.0.1 (never the packaged service).
P=$(port)
cat > "$T/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $T/registry
http:
  addr: 127.0.0.1:$P
  secret: kiln-bench
EOF
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 &
RPID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$P/v2/" >/dev/null && break
    sleep 0.1
done
R=127.0.0.1:$P

# Content: a busybox base and a layer of random bytes.
D=$T/data
mkdir -p "$D/base/bin" "$D/top"
cp /bin/busybox "$D/base/bin/busybox"
ln -s busybox "$D/base/bin/sh"
head -c "${MB}M" /dev/urandom >"$D/top/random.bin"
"$TOOL" import "$D" "$D/base" base:1 >/dev/null

read -r _ k_commit _ _ < <("$TOOL" commit "$D" base:1 "$D/top" app:1)
read -r _ k_push k_rss _ < <("$TOOL" --tls-verify=false push "$D" app:1 "$R/kiln/app:1")
read -r _ k_repush _ _ < <("$TOOL" --tls-verify=false push "$D" app:1 "$R/kiln/app:1")
k_total=$(awk -v a="$k_commit" -v b="$k_push" 'BEGIN { printf "%.3f", a + b }')

t=$(now)
skopeo copy -q --dest-tls-verify=false "oci:$D/store:app:1" "docker://$R/skopeo/app:1"
s_copy=$(since "$t")

b_commit=- b_push=- b_total=-
if command -v buildah >/dev/null; then
    BH=(buildah --root "$T/bh/root" --runroot "$T/bh/run" --storage-driver vfs)
    ctr=$("${BH[@]}" from -q --name bench-ctr "oci:$D/store:base:1")
    "${BH[@]}" copy "$ctr" "$D/top/random.bin" /random.bin >/dev/null
    t=$(now)
    "${BH[@]}" commit -q "$ctr" bench-app >/dev/null
    b_commit=$(since "$t")
    t=$(now)
    "${BH[@]}" push -q --tls-verify=false bench-app "docker://$R/buildah/app:1"
    b_push=$(since "$t")
    b_total=$(awk -v a="$b_commit" -v b="$b_push" 'BEGIN { printf "%.3f", a + b }')
fi

printf '%-8s %9s %9s %9s\n' tool commit_s push_s total_s
printf '%-8s %9s %9s %9s\n' kiln "$k_commit" "$k_push" "$k_total"
printf '%-8s %9s %9s %9s\n' buildah "$b_commit" "$b_push" "$b_total"
printf '%-8s %9s %9s %9s\n' skopeo - "$s_copy" "$s_copy"
if [ "$b_total" != - ]; then
    awk -v k="$k_total" -v b="$b_total" \
        'BEGIN { printf "kiln/buildah (packing + push): %.2fx (goal <= 0.5x)\n", k / b }'
    awk -v k="$k_push" -v b="$b_push" \
        'BEGIN { printf "kiln push / buildah push: %.2fx\n", k / b }'
fi
awk -v k="$k_push" -v s="$s_copy" 'BEGIN { printf "kiln push / skopeo copy: %.2fx\n", k / s }'
echo "kiln re-push: ${k_repush} s (goal < 0.05 s)"
awk -v r="$k_rss" 'BEGIN { printf "kiln peak RSS while pushing: %.1f MiB (goal < 64 MiB)\n", r / 1024 }'
