#!/usr/bin/env python3
"""Prints a canonical description of a directory tree, one line per entry,
for comparing a packed-and-extracted tree against its source: type, mode,
owner, size, content hash, link target, device numbers, xattrs, mtime and
hardlink grouping.  The root directory itself is not described (layers have
no root entry).  Usage: tree_snapshot.py DIR [--no-mtime]"""
import hashlib
import os
import stat
import sys

IGNORED_XATTRS = {"security.selinux"}


def xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    out = []
    for n in sorted(names):
        if n in IGNORED_XATTRS or n.startswith("trusted.overlay.") or n.startswith("user.overlay."):
            continue
        out.append("%s=%s" % (n, os.getxattr(path, n, follow_symlinks=False).hex()))
    return out


def main():
    root = sys.argv[1]
    with_mtime = "--no-mtime" not in sys.argv
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            entries.append(os.path.join(dirpath, n))
    first_of_inode = {}
    for p in sorted(entries, key=lambda s: os.fsencode(s)):
        rel = os.path.relpath(p, root)
        st = os.lstat(p)
        kind = stat.S_IFMT(st.st_mode)
        fields = [repr(rel), "%o" % st.st_mode, "%d:%d" % (st.st_uid, st.st_gid)]
        if stat.S_ISREG(kind):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            fields += ["size=%d" % st.st_size, h.hexdigest()[:16]]
        elif stat.S_ISLNK(kind):
            fields.append("-> " + repr(os.readlink(p)))
        elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
            fields.append("dev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
        if not stat.S_ISDIR(kind) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first_of_inode.setdefault(key, rel)
            fields.append("links=%d first=%r" % (st.st_nlink, first_of_inode[key]))
        if with_mtime and not stat.S_ISLNK(kind):
            fields.append("mtime=%d" % int(st.st_mtime))
        fields += xattrs(p)
        print(" ".join(fields))


if __name__ == "__main__":
    main()
