#!/usr/bin/env python3
"""Compares two directory trees the way an image user sees them: type, mode,
owner, size, content, link target, device number, hard-link count and xattrs
(overlay's own trusted.overlay.* and SELinux labels excluded).  Prints every
difference; exit status 1 when there is one."""
import hashlib
import os
import stat
import sys

SKIP_XATTR = ("trusted.overlay.", "user.overlay.", "security.selinux")


def record(path):
    st = os.lstat(path)
    rec = {"type": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
           "uid": st.st_uid, "gid": st.st_gid}
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            rec["sha256"] = hashlib.sha256(f.read()).hexdigest()
        rec["size"] = st.st_size
        rec["nlink"] = st.st_nlink
    elif stat.S_ISLNK(st.st_mode):
        rec["target"] = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if not stat.S_ISLNK(st.st_mode):
        names = sorted(n for n in os.listxattr(path, follow_symlinks=False)
                       if not n.startswith(SKIP_XATTR))
        rec["xattrs"] = {n: os.getxattr(path, n, follow_symlinks=False).hex() for n in names}
    return rec


def walk(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = record(p)
    return out


def main():
    a, b = walk(sys.argv[1]), walk(sys.argv[2])
    bad = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    for k in bad:
        print("%s:\n  want %s\n  got  %s" % (k, a.get(k), b.get(k)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
