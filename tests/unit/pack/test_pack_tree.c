/* Root-only packing tests: a tree with every file kind (devices, setuid,
 * foreign owners, security.capability, trusted.* xattrs, hardlinks, odd
 * names) survives GNU tar extraction and `umoci unpack` unchanged; overlay
 * whiteouts and opaque dirs become OCI whiteouts that umoci applies over a
 * base layer.  Exits 77 (skip) when not root. */
#include "kt.h"
#include "pack_test_util.h"

#ifndef PACK_TEST_DIR
#error "PACK_TEST_DIR must name tests/unit/pack"
#endif
#define SNAPSHOT "python3 " PACK_TEST_DIR "/tree_snapshot.py"

/* security.capability v2 with cap_net_bind_service permitted + effective */
#define CAP_XATTR "__import__('struct').pack('<IIIII', 0x02000001, 0x400, 0, 0, 0)"

static char *make_full_tree(void)
{
    char *root = kt_tmpdir("pack-test");
    if (root == NULL)
        return NULL;
    int rc =
        kt_sh("set -e; cd '%s'; mkdir -p dir/sub setgid sticky 'ü ñ' owned;"
              "seq 1 200000 > dir/text; : > empty; printf x > 'with space';"
              "printf n > \"$(printf 'new\\nline')\"; printf u > 'ü ñ/fïlé';"
              "truncate -s 24M sparse; printf data | dd of=sparse bs=1 seek=12000000 conv=notrunc "
              "status=none;"
              "printf s > suid; chmod 4755 suid; chmod 2775 setgid; chmod 1777 sticky;"
              "ln -s dir/text rel-link; ln -s /usr/bin/env abs-link;"
              "ln -s $(printf 'T%%.0s' $(seq 1 150)) long-target-link;"
              "printf h > dir/hard1; ln dir/hard1 hard2; ln dir/hard1 dir/sub/hard3;"
              "mknod chr c 1 3; mknod blk b 7 0; mkfifo fifo;"
              "L=$(printf 'L%%.0s' $(seq 1 120)); mkdir -p \"deep/$L\"; printf l > \"deep/$L/$L\";"
              "printf o > owned/f; chown -R 1234:5678 owned; chown 3000000:3000001 empty;"
              "chown -h 42:43 rel-link;"
              "python3 -c \"import os; os.setxattr('suid','security.capability',%s);"
              "os.setxattr('dir/text','user.mime',b'text/plain');"
              "os.setxattr('dir','trusted.kiln',b'\\x00\\x01');"
              "os.setxattr('dir/text','trusted.overlay.origin',b'internal')\";"
              "chmod 4755 suid; touch -d '2001-02-03 04:05:06' dir/text",
              root, CAP_XATTR);
    if (rc != 0) {
        kt_rmrf_free(root);
        return NULL;
    }
    return root;
}

/* Prints a unified diff of two snapshots to stderr when they differ. */
static void show_diff(const char *work, const char *a, const char *b)
{
    if (strcmp(a, b) == 0)
        return;
    char pa[512], pb[512];
    snprintf(pa, sizeof(pa), "%s/snap-a", work);
    snprintf(pb, sizeof(pb), "%s/snap-b", work);
    FILE *fa = fopen(pa, "w"), *fb = fopen(pb, "w");
    if (fa != NULL && fb != NULL) {
        fputs(a, fa);
        fputs(b, fb);
    }
    if (fa != NULL)
        fclose(fa);
    if (fb != NULL)
        fclose(fb);
    kt_sh("diff '%s' '%s' >&2", pa, pb);
}

static void require_root(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skip: needs root (devices, chown, trusted.* xattrs)\n");
        exit(77);
    }
}

KT_TEST(every_file_kind_round_trips_through_gnu_tar)
{
    require_root();
    char *root = make_full_tree(), *work = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL && work != NULL);
    char blob[512];
    snprintf(blob, sizeof(blob), "%s/layer.tgz", work);
    psh_layer_info info;
    KT_REQUIRE(pack_to(&info, root, blob, NULL, NULL) == 0);
    KT_EXPECT_INT(kt_sh("gzip -t '%s'", blob), 0);
    KT_REQUIRE(kt_sh("mkdir '%s/x' && tar -xpf '%s' --xattrs --xattrs-include='*' --numeric-owner "
                     "-C '%s/x'",
                     work, blob, work) == 0);
    char *a = kt_capture(true, SNAPSHOT " '%s'", root);
    char *b = kt_capture(true, SNAPSHOT " '%s/x'", work);
    KT_REQUIRE(a != NULL && b != NULL);
    show_diff(work, a, b);
    KT_EXPECT(strcmp(a, b) == 0);
    /* the snapshot really covers the interesting kinds */
    KT_EXPECT(strstr(a, "security.capability=") != NULL);
    KT_EXPECT(strstr(a, "trusted.kiln=0001") != NULL);
    KT_EXPECT(strstr(a, "dev=1,3") != NULL && strstr(a, "3000000:3000001") != NULL);
    KT_EXPECT(strstr(a, "links=3") != NULL && strstr(a, "104755") != NULL);
    KT_EXPECT(strstr(b, "trusted.overlay") == NULL);
    free(a);
    free(b);
    /* overlay's own xattrs never reach the tar */
    KT_EXPECT_INT(kt_sh("gzip -dc '%s' | grep -a -q trusted.overlay", blob), 1);
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}

/* Writes an OCI layout with one image "t" made of the given layer blobs. */
static int make_layout(const char *layout, const char *blobs[], const psh_layer_info *infos, int n)
{
    char args[4096] = "";
    size_t off = 0;
    for (int i = 0; i < n; i++)
        off +=
            (size_t)snprintf(args + off, sizeof(args) - off, " '%s' %s %s %llu", blobs[i],
                             infos[i].digest, infos[i].diff_id, (unsigned long long)infos[i].size);
    return kt_sh("python3 - '%s' %s <<'EOF'\n"
                 "import hashlib, json, os, shutil, sys\n"
                 "lay = sys.argv[1]; a = sys.argv[2:]\n"
                 "os.makedirs(lay + '/blobs/sha256')\n"
                 "open(lay + '/oci-layout', 'w').write('{\"imageLayoutVersion\":\"1.0.0\"}')\n"
                 "def put(b):\n"
                 "    d = hashlib.sha256(b).hexdigest()\n"
                 "    open(lay + '/blobs/sha256/' + d, 'wb').write(b)\n"
                 "    return 'sha256:' + d, len(b)\n"
                 "layers = []; diffs = []\n"
                 "for i in range(0, len(a), 4):\n"
                 "    shutil.copy(a[i], lay + '/blobs/sha256/' + a[i+1][7:])\n"
                 "    layers.append({'mediaType': 'application/vnd.oci.image.layer.v1.tar+gzip',\n"
                 "                   'digest': a[i+1], 'size': int(a[i+3])})\n"
                 "    diffs.append(a[i+2])\n"
                 "cd, cs = put(json.dumps({'architecture': 'amd64', 'os': 'linux', 'config': {},\n"
                 "    'rootfs': {'type': 'layers', 'diff_ids': diffs}}).encode())\n"
                 "md, ms = put(json.dumps({'schemaVersion': 2,\n"
                 "    'mediaType': 'application/vnd.oci.image.manifest.v1+json',\n"
                 "    'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',\n"
                 "               'digest': cd, 'size': cs}, 'layers': layers}).encode())\n"
                 "json.dump({'schemaVersion': 2, 'manifests': [{\n"
                 "    'mediaType': 'application/vnd.oci.image.manifest.v1+json', 'digest': md,\n"
                 "    'size': ms, 'annotations': {'org.opencontainers.image.ref.name': 't'}}]},\n"
                 "    open(lay + '/index.json', 'w'))\n"
                 "EOF",
                 layout, args);
}

KT_TEST(umoci_unpacks_every_file_kind)
{
    require_root();
    if (kt_sh("command -v umoci >/dev/null") != 0) {
        fprintf(stderr, "  (umoci missing: case skipped)\n");
        return;
    }
    char *root = make_full_tree(), *work = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL && work != NULL);
    char blob[512], layout[512];
    snprintf(blob, sizeof(blob), "%s/layer.tgz", work);
    snprintf(layout, sizeof(layout), "%s/layout", work);
    psh_layer_info info;
    KT_REQUIRE(pack_to(&info, root, blob, NULL, NULL) == 0);
    const char *blobs[] = {blob};
    KT_REQUIRE(make_layout(layout, blobs, &info, 1) == 0);
    KT_REQUIRE(kt_sh("umoci unpack --image '%s:t' '%s/bundle' >/dev/null 2>&1", layout, work) == 0);
    /* umoci keeps content, modes, owners, links, devices and xattrs */
    char *a = kt_capture(true, SNAPSHOT " '%s' --no-mtime", root);
    char *b = kt_capture(true, SNAPSHOT " '%s/bundle/rootfs' --no-mtime", work);
    KT_REQUIRE(a != NULL && b != NULL);
    show_diff(work, a, b);
    KT_EXPECT(strcmp(a, b) == 0);
    free(a);
    free(b);
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}

KT_TEST(overlay_whiteouts_become_oci_whiteouts)
{
    require_root();
    char *base = kt_tmpdir("pack-test"), *upper = kt_tmpdir("pack-test"),
         *work = kt_tmpdir("pack-test");
    KT_REQUIRE(base != NULL && upper != NULL && work != NULL);
    KT_REQUIRE(kt_sh("set -e; cd '%s'; mkdir -p opq/inner keep; printf 1 > opq/old1;"
                     "printf 2 > opq/inner/old2; printf g > gone; printf k > keep/k; mkdir gonedir;"
                     "printf x > gonedir/x",
                     base) == 0);
    KT_REQUIRE(kt_sh("set -e; cd '%s'; mkdir opq keep; printf n > opq/new; printf a > opq/!first;"
                     "mknod gone c 0 0; mknod gonedir c 0 0; mknod keep/k c 0 0;"
                     "python3 -c \"import os; os.setxattr('opq','trusted.overlay.opaque',b'y')\"",
                     upper) == 0);
    char b0[512], b1[512];
    snprintf(b0, sizeof(b0), "%s/base.tgz", work);
    snprintf(b1, sizeof(b1), "%s/diff.tgz", work);
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    psh_layer_info infos[2];
    KT_REQUIRE(pack_to(&infos[0], base, b0, &o, NULL) == 0);
    o.overlay_diff = true;
    KT_REQUIRE(pack_to(&infos[1], upper, b1, &o, NULL) == 0);
    char *names = kt_capture(true, "tar -tzf '%s' | tr '\\n' '|'", b1);
    KT_EXPECT_STR(names, ".wh.gone|.wh.gonedir|keep/|keep/.wh.k|opq/|opq/.wh..wh..opq|opq/!first|"
                         "opq/new|");
    free(names);
    char *kinds =
        kt_capture(true, "tar -tvzf '%s' | grep wh | awk '{print $1, $2, $3}' | sort -u", b1);
    KT_EXPECT_STR(kinds, "-rw------- 0/0 0");
    free(kinds);
    /* without overlay mode the same dir keeps its device nodes */
    o.overlay_diff = false;
    KT_REQUIRE(pack_to(&infos[1], upper, b1, &o, NULL) == 0);
    KT_EXPECT_INT(kt_sh("tar -tvzf '%s' | grep -q '^c.* gone$'", b1), 0);
    o.overlay_diff = true;
    KT_REQUIRE(pack_to(&infos[1], upper, b1, &o, NULL) == 0);

    if (kt_sh("command -v umoci >/dev/null") == 0) {
        char layout[512];
        snprintf(layout, sizeof(layout), "%s/layout", work);
        const char *blobs[] = {b0, b1};
        KT_REQUIRE(make_layout(layout, blobs, infos, 2) == 0);
        KT_REQUIRE(kt_sh("umoci unpack --image '%s:t' '%s/bundle' >/dev/null 2>&1", layout, work) ==
                   0);
        char *tree =
            kt_capture(true, "cd '%s/bundle/rootfs' && find . | sort | tr '\\n' '|'", work);
        KT_EXPECT_STR(tree, ".|./keep|./opq|./opq/!first|./opq/new|");
        free(tree);
    }
    /* a whiteout and a real file with the whiteout's name: refused */
    KT_REQUIRE(kt_sh("printf x > '%s/.wh.gone'", upper) == 0);
    kiln_code dup = KILN_OK;
    KT_EXPECT(pack_to(&infos[1], upper, b1, &o, &dup) < 0);
    KT_EXPECT_INT(dup, KILN_EINVAL);
    KT_REQUIRE(kt_sh("rm '%s/.wh.gone'", upper) == 0);
    /* upper dirs using overlay metacopy are refused, not packed wrong */
    KT_REQUIRE(kt_sh("python3 -c \"import os; os.setxattr('%s/opq/new','trusted.overlay.metacopy',"
                     "b'')\"",
                     upper) == 0);
    kiln_code code = KILN_OK;
    KT_EXPECT(pack_to(&infos[1], upper, b1, &o, &code) < 0);
    KT_EXPECT_INT(code, KILN_ENOTSUP);
    kt_rmrf_free(base);
    kt_rmrf_free(upper);
    kt_rmrf_free(work);
}

KT_TEST(mount_points_are_not_crossed)
{
    require_root();
    char *root = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL);
    KT_REQUIRE(kt_sh("mkdir '%s/mnt' && printf a > '%s/a'", root, root) == 0);
    if (kt_sh("mount -t tmpfs kiln-test '%s/mnt' 2>/dev/null", root) != 0) {
        fprintf(stderr, "  (cannot mount tmpfs: case skipped)\n");
        kt_rmrf_free(root);
        return;
    }
    kt_sh("printf hidden > '%s/mnt/secret'", root);
    char *work = kt_tmpdir("pack-test"), blob[512];
    snprintf(blob, sizeof(blob), "%s/b.tgz", work);
    psh_layer_info info;
    int rc = pack_to(&info, root, blob, NULL, NULL);
    kt_sh("umount '%s/mnt'", root);
    KT_EXPECT_INT(rc, 0);
    char *names = kt_capture(true, "tar -tzf '%s' | tr '\\n' '|'", blob);
    KT_EXPECT_STR(names, "a|mnt/|");
    free(names);
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}

KT_TEST(rootless_id_maps_translate_owners)
{
    require_root();
    char *root = kt_tmpdir("pack-test"), *work = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL && work != NULL);
    KT_REQUIRE(kt_sh("set -e; cd '%s'; mkdir d; printf a > d/a; printf b > b;"
                     "chown -R 100000:100000 . ; chown 100005:100007 b",
                     root) == 0);
    char blob[512];
    snprintf(blob, sizeof(blob), "%s/b.tgz", work);
    static const psh_id_range map[] = {{0, 100000, 65536}};
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    o.uid_map = o.gid_map = map;
    o.uid_map_len = o.gid_map_len = 1;
    psh_layer_info info;
    KT_EXPECT_INT(pack_to(&info, root, blob, &o, NULL), 0);
    char *owners = kt_capture(true, "tar -tvzf '%s' | awk '{print $2, $6}' | tr '\\n' '|'", blob);
    KT_EXPECT_STR(owners, "5/7 b|0/0 d/|0/0 d/a|");
    free(owners);
    /* an id the map does not cover is an error, not a silent host id */
    KT_REQUIRE(kt_sh("chown 5:5 '%s/d/a'", root) == 0);
    kiln_code code = KILN_OK;
    KT_EXPECT(pack_to(&info, root, blob, &o, &code) < 0);
    KT_EXPECT_INT(code, KILN_EINVAL);
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}
