#!/usr/bin/env bash
# A minimal Debian 12 rootfs assembled from the host's own installed packages
# (the host must be Debian 12 or a derivative with merged /usr), so no package
# mirror or network is needed:
#   bench/mkbase-debian.sh OUTDIR
# OUTDIR must not exist or be empty; it becomes the rootfs (run as root so the
# files keep their owners). What it holds:
#   - every file `dpkg -L` lists for base-files base-passwd bash coreutils dash
#     debianutils diffutils findutils grep gzip hostname libc-bin libc6 mawk
#     ncurses-base sed tar util-linux (those installed), paths under /bin,
#     /sbin, /lib and /lib64 stored below /usr;
#   - the shared libraries their ELF files need, as resolved by ldd;
#   - merged-usr links /bin /sbin /lib /lib64 -> usr/..., as on Debian 12;
#   - /etc/passwd and /etc/group from base-passwd's masters, /usr/bin/awk ->
#     mawk, /etc/os-release (from base-files), /tmp and /var/tmp 1777, /root 0700.
# Prints the size and file count at the end.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
R=$1
if [ -e "$R" ] && [ -n "$(ls -A "$R")" ]; then
    echo "$0: $R is not empty" >&2
    exit 1
fi
command -v dpkg-query >/dev/null || { echo "$0: not a Debian host (no dpkg-query)" >&2; exit 1; }
mkdir -p "$R"
R=$(cd "$R" && pwd)

PKGS="base-files base-passwd bash coreutils dash debianutils diffutils findutils grep gzip
      hostname libc-bin libc6 mawk ncurses-base sed tar util-linux"

# Merged /usr: the top-level links first, so every copy below lands in usr/.
mkdir -p "$R/usr/bin" "$R/usr/sbin" "$R/usr/lib" "$R/usr/lib64"
ln -s usr/bin "$R/bin"
ln -s usr/sbin "$R/sbin"
ln -s usr/lib "$R/lib"
ln -s usr/lib64 "$R/lib64"

# in_root PATH: where a host path goes in the rootfs (merged-usr aliases folded).
in_root() {
    case $1 in
    /bin/* | /sbin/* | /lib/* | /lib64/*) printf '%s/usr%s' "$R" "$1" ;;
    /bin | /sbin | /lib | /lib64) printf '%s/usr%s' "$R" "$1" ;;
    *) printf '%s%s' "$R" "$1" ;;
    esac
}

# put PATH: copy one host path (file, symlink or directory itself) into the rootfs.
put() {
    local src=$1 dst
    dst=$(in_root "$src")
    [ -e "$src" ] || [ -L "$src" ] || return 0
    [ -e "$dst" ] || [ -L "$dst" ] && return 0
    if [ -d "$src" ] && [ ! -L "$src" ]; then
        mkdir -p "$dst"
        chmod --reference="$src" "$dst"
        chown --reference="$src" "$dst" 2>/dev/null || true
    else
        mkdir -p "$(dirname "$dst")"
        cp -a "$src" "$dst"
    fi
}

n_pkgs=0
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        echo "$0: skipping $p (not installed here)" >&2
        continue
    fi
    n_pkgs=$((n_pkgs + 1))
    # dpkg -L also prints diversion notes: keep the absolute paths only.
    while IFS= read -r f; do
        case $f in /*) ;; *) continue ;; esac
        [ "$f" = /. ] && continue
        put "$f"
    done < <(dpkg -L "$p")
done

# Shared libraries of every ELF file in the tree, resolved on the host.
libs=$(find "$R/usr" -type f \( -perm -u+x -o -name '*.so*' \) -print0 |
    { xargs -0 ldd 2>/dev/null || true; } |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(0x/ { print $1 }' |
    sort -u)
for l in $libs; do
    case $l in "$R"/*) continue ;; esac # found in the tree itself ($ORIGIN)
    put "$l"
    # The soname is usually a link: bring its target along.
    real=$(readlink -f "$l")
    [ "$real" != "$l" ] && put "$real"
done

# What maintainer scripts would have done.
ln -sf mawk "$R/usr/bin/awk"
[ -e "$R/usr/bin/sh" ] || ln -s dash "$R/usr/bin/sh"
mkdir -p "$R/etc" "$R/root" "$R/tmp" "$R/var/tmp" "$R/dev" "$R/proc" "$R/sys" "$R/run" \
    "$R/home" "$R/mnt" "$R/opt" "$R/srv" "$R/usr/local/bin"
if [ -f /usr/share/base-passwd/passwd.master ]; then
    cp /usr/share/base-passwd/passwd.master "$R/etc/passwd"
    cp /usr/share/base-passwd/group.master "$R/etc/group"
else
    printf 'root:x:0:0:root:/root:/bin/bash\n' > "$R/etc/passwd"
    printf 'root:x:0:\n' > "$R/etc/group"
fi
chmod 0644 "$R/etc/passwd" "$R/etc/group"
if [ ! -e "$R/etc/os-release" ] && [ ! -e "$R/usr/lib/os-release" ]; then
    cp /etc/os-release "$R/usr/lib/os-release" 2>/dev/null ||
        printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n' \
            > "$R/usr/lib/os-release"
    ln -s ../usr/lib/os-release "$R/etc/os-release"
fi
chmod 1777 "$R/tmp" "$R/var/tmp"
chmod 0700 "$R/root"

# Sanity: the dynamic loader and a shell run from the new tree.
if ! chroot "$R" /bin/sh -c 'exit 0' 2>/dev/null; then
    echo "$0: /bin/sh does not run inside $R" >&2
    exit 1
fi
printf '%s: %d packages, %s files, %s\n' "$R" "$n_pkgs" \
    "$(find "$R" | wc -l)" "$(du -sh "$R" | cut -f1)"
