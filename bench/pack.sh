#!/usr/bin/env bash
# Layer packing benchmark: Kiln (kiln-pack-tool) against `tar | gzip -6 |
# sha256sum` and `tar | pigz -6 -p$(nproc) | sha256sum` on the same ~500 MB
# mixed tree, in the same run; prints MB/s of tar input, speed ratios and
# compression ratios, then Kiln's peak RSS packing a 1 GiB random file.
# Goals (SPEC §7): >= 2x the pigz pipeline at a comparable ratio; < 64 MiB RSS.
# On a shared machine one run of each says little (other tenants' load comes
# and goes within seconds): pigz and Kiln alternate for several rounds and
# the median and spread of the per-round ratios are printed.
#
#   bench/pack.sh [BUILD_DIR]      (default: build; needs kiln-pack-tool built)
# Env: KILN_BENCH_SYS_MB (system files, default 300), KILN_BENCH_SKIP_RSS=1,
#      KILN_BENCH_ROUNDS (pigz/Kiln rounds, default 5),
#      KILN_BENCH_CODECS=1 (also compare the deflate libraries on one core).
set -euo pipefail

BUILD=${1:-build}
TOOL=${KILN_PACK_TOOL:-$BUILD/pusher-svc/pack/kiln-pack-tool}
SYS_MB=${KILN_BENCH_SYS_MB:-300}
ROUNDS=${KILN_BENCH_ROUNDS:-5}
NPROC=$(nproc)
[ -x "$TOOL" ] || { echo "pack.sh: $TOOL not built" >&2; exit 2; }
command -v pigz >/dev/null || { echo "pack.sh: pigz missing" >&2; exit 2; }

TMP=$(mktemp -d /tmp/kiln-bench-pack.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
TREE=$TMP/tree
mkdir -p "$TREE/sys" "$TREE/small"

# --- the tree: system files + many small random files + one 150 MB random file
python3 - "$SYS_MB" > "$TMP/sys.list" <<'EOF'
import os, sys
limit, total = int(sys.argv[1]) << 20, 0
for top in ("lib/x86_64-linux-gnu", "share", "bin"):
    for d, dirs, files in os.walk("/usr/" + top):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p) or os.path.getsize(p) > 20 << 20:
                continue
            print(os.path.relpath(p, "/usr"))
            total += os.path.getsize(p)
            if total >= limit:
                sys.exit(0)
EOF
tar -C /usr -cf - -T "$TMP/sys.list" | tar -C "$TREE/sys" -xf -
python3 - "$TREE/small" <<'EOF'
import os, random, sys
rnd = random.Random(42)
root = sys.argv[1]
for d in range(40):
    os.makedirs("%s/d%02d" % (root, d))
    for i in range(100):
        # half base64-like text (compressible ~1.3x), half raw random
        n = rnd.randint(200, 20000)
        data = os.urandom(n)
        if i % 2 == 0:
            import base64
            data = base64.b64encode(data)
        with open("%s/d%02d/f%03d" % (root, d, i), "wb") as f:
            f.write(data)
EOF
head -c 150M /dev/urandom > "$TREE/random.bin"

TAR_BYTES=$(tar -C "$TREE" -cf - . | wc -c) # also warms the page cache
printf 'tree: %s (%d MB tar), %d CPUs\n' "$(du -sh "$TREE" | cut -f1)" \
    $((TAR_BYTES / 1000000)) "$NPROC"

mbps() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.1f", b / t / 1e6 }'; }

# measure NAME CMD: wall and CPU (user+sys of every process) seconds of CMD,
# run by bash so the pipelines' children are counted.
measure() {
    local name=$1 cmd=$2
    /usr/bin/time -f "%e %U %S" -o "$TMP/$name.time" bash -c "$cmd"
    read -r wall user sys < "$TMP/$name.time"
    eval "T_$name=$wall"
    eval "C_$name=$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')"
}

PIPE_SIZE="tee >(wc -c > \"$TMP/size\") | sha256sum > /dev/null"
kiln_run() { # NAME ARGS...: one kiln-pack-tool run into T_/C_/S_NAME
    local name=$1
    shift
    measure "$name" "'$TOOL' $* '$TREE' '$TMP/$name.blob' > '$TMP/$name.json'"
    eval "S_$name=$(stat -c %s "$TMP/$name.blob")"
    rm -f "$TMP/$name.blob"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }

measure gzip "tar -C '$TREE' -cf - . | gzip -6 | $PIPE_SIZE"
sleep 0.2; S_gzip=$(cat "$TMP/size")
# pigz and Kiln alternate, so both see the same load; the tables below use
# each one's median round.
: > "$TMP/rounds"
printf '\nround  pigz wall  kiln wall  kiln cores  ratio  load\n'
for r in $(seq 1 "$ROUNDS"); do
    measure pigz "tar -C '$TREE' -cf - . | pigz -6 -p$NPROC | $PIPE_SIZE"
    sleep 0.2; S_pigz=$(cat "$TMP/size")
    kiln_run kiln
    echo "$T_pigz $C_pigz $T_kiln $C_kiln" >> "$TMP/rounds"
    printf '%5d %9.2f %10.2f %11.2f %5.2fx  %s\n' "$r" "$T_pigz" "$T_kiln" \
        "$(awk -v c="$C_kiln" -v t="$T_kiln" 'BEGIN { print c / t }')" \
        "$(awk -v p="$T_pigz" -v t="$T_kiln" 'BEGIN { print p / t }')" \
        "$(cut -d' ' -f1 /proc/loadavg)"
done
T_pigz=$(cut -d' ' -f1 "$TMP/rounds" | median)
C_pigz=$(cut -d' ' -f2 "$TMP/rounds" | median)
T_kiln=$(cut -d' ' -f3 "$TMP/rounds" | median)
C_kiln=$(cut -d' ' -f4 "$TMP/rounds" | median)
RATIOS=$(awk '{ printf "%.2f\n", $1 / $3 }' "$TMP/rounds")
printf 'wall-clock speed-up over pigz, %d rounds: median %sx, spread %sx\n' "$ROUNDS" \
    "$(echo "$RATIOS" | median)" "$(echo "$RATIOS" | spread)"
kiln_run kiln1 --threads 1
kiln_run zstd --comp zstd

digest() { sed -n 's/.*"digest":"\([^"]*\)".*/\1/p' "$TMP/$1.json"; }
same="no"
[ "$(digest kiln)" = "$(digest kiln1)" ] && same="yes"

printf '\nwall-clock MB/s of tar input; CPU = user+sys seconds of all processes (pigz and\n'
printf 'kiln default: medians of the rounds above; the others: one run)\n'
printf '%-34s %7s %8s %7s %7s %9s %9s\n' pipeline wall "MB/s" CPU ratio "wall/pigz" "CPU/pigz"
row() {
    local label=$1 t=$2 c=$3 s=$4
    printf '%-34s %7.2f %8s %7.2f %7.3f %8.2fx %8.2fx\n' "$label" "$t" \
        "$(mbps "$TAR_BYTES" "$t")" "$c" \
        "$(awk -v a="$TAR_BYTES" -v b="$s" 'BEGIN { print a / b }')" \
        "$(awk -v p="$T_pigz" -v t="$t" 'BEGIN { print p / t }')" \
        "$(awk -v p="$C_pigz" -v c="$c" 'BEGIN { print p / c }')"
}
# T_/C_/S_<name> are assigned through eval by the timing helpers above.
# shellcheck disable=SC2154
{
    row "tar | gzip -6 | sha256sum" "$T_gzip" "$C_gzip" "$S_gzip"
    row "tar | pigz -6 -p$NPROC | sha256sum" "$T_pigz" "$C_pigz" "$S_pigz"
    row "kiln gzip (default, $NPROC threads)" "$T_kiln" "$C_kiln" "$S_kiln"
    row "kiln gzip (default, 1 thread)" "$T_kiln1" "$C_kiln1" "$S_kiln1"
    row "kiln zstd (default, $NPROC threads)" "$T_zstd" "$C_zstd" "$S_zstd"
}
printf 'kiln gzip digest identical for 1 and %d threads: %s\n' "$NPROC" "$same"
printf 'kiln also computes the DiffID and writes the blob; the pipelines only hash.\n'
printf 'load average during the run: %s (other work on the machine skews wall-clock)\n' \
    "$(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${KILN_BENCH_CODECS:-0}" = 1 ]; then
    # one-core codec comparison on the first 200 MB of the tree's tar (the
    # table in pusher-svc/pack/include/psh_pack.h)
    tar -C "$TREE" -cf - . | head -c 200000000 > "$TMP/codec.tar" || true
    printf '\none core, 1 MiB blocks, first 200 MB of the tree tar:\n'
    "$TOOL" --codec-bench "$TMP/codec.tar"
    rm -f "$TMP/codec.tar"
fi

if [ "${KILN_BENCH_SKIP_RSS:-0}" != 1 ]; then
    rm -rf "$TREE"
    mkdir -p "$TMP/big"
    head -c 1G /dev/urandom > "$TMP/big/random-1g.bin"
    /usr/bin/time -v "$TOOL" "$TMP/big" "$TMP/big.blob" > "$TMP/big.json" 2> "$TMP/big.time"
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$TMP/big.time")
    printf '\npeak RSS packing a 1 GiB random file: %d KiB (%.1f MiB; goal < 64 MiB)\n' \
        "$rss" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')"
    cat "$TMP/big.json"
fi
