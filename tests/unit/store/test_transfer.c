/* Import and export: source detection, hostile tarballs and layouts, and
 * destinations that must not be overwritten. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "psh_transfer.h"
#include "store_fixture.h"

static char *index_bytes(fx_env *e)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/index.json", psh_store_path(e->s));
    return kt_read_file(path, NULL);
}

static void opts(psh_import_opts *o)
{
    psh_import_opts_init(o);
    o->platform.architecture = "amd64";
    o->created = 1700000000;
    o->pack.threads = 1;
}

KT_TEST(import_plain_tar_and_dir_agree)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    KT_REQUIRE(kt_sh("cd %s && mkdir -p root/etc && echo hi > root/etc/motd && "
                     "tar --sort=name --owner=0 --group=0 --mtime=@0 -C root -cf root.tar etc && "
                     "gzip -k root.tar",
                     e.dir) == 0);
    char tar[4096], tgz[4096];
    snprintf(tar, sizeof(tar), "%s/root.tar", e.dir);
    snprintf(tgz, sizeof(tgz), "%s/root.tar.gz", e.dir);
    psh_import_opts o;
    opts(&o);
    psh_descriptor a, b;
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_import(e.s, tar, "t:plain", &o, &a, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_import(e.s, tgz, "t:gz", &o, &b, &err), 0);
    kiln_error_free(&err);
    /* The same tar bytes, compressed or not, give the same image. */
    KT_EXPECT_STR(a.digest, b.digest);
    psh_inspect in;
    KT_REQUIRE(psh_store_inspect(e.s, "t:gz", &in, NULL) == 0);
    KT_EXPECT(strstr(in.config_json, "\"created_by\":\"kiln import\"") != NULL);
    KT_EXPECT(strstr(in.config_json, "\"architecture\":\"amd64\"") != NULL);
    psh_inspect_dispose(&in);
    fx_env_close(&e);
}

KT_TEST(import_rejects_hostile_or_bogus_sources)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char *before = index_bytes(&e);
    KT_REQUIRE(kt_sh("cd %s && python3 -c \"import tarfile,io\n"
                     "t=tarfile.open('evil.tar','w')\n"
                     "i=tarfile.TarInfo('ok/../../escape'); i.size=1\n"
                     "t.addfile(i, io.BytesIO(b'x')); t.close()\n"
                     "t=tarfile.open('up.tar','w')\n"
                     "i=tarfile.TarInfo('../etc/passwd'); i.size=1\n"
                     "t.addfile(i, io.BytesIO(b'x')); t.close()\n"
                     "t=tarfile.open('link.tar','w')\n"
                     "i=tarfile.TarInfo('l'); i.type=tarfile.LNKTYPE; i.linkname='../x'\n"
                     "t.addfile(i); t.close()\" && echo not a tar > junk.bin && : > empty",
                     e.dir) == 0);
    /* (Absolute names are taken relative to the root: store_cli.sh.) */
    const char *names[] = {"evil.tar", "up.tar", "link.tar", "junk.bin", "empty"};
    psh_import_opts o;
    opts(&o);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(names); i++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", e.dir, names[i]);
        kiln_error *err = NULL;
        psh_descriptor d;
        int r = psh_store_import(e.s, p, "bad:1", &o, &d, &err);
        if (r != KILN_EINVAL)
            KT_FAIL("%s: %d %s", names[i], r, err ? err->msg : "");
        kiln_error_free(&err);
    }
    /* Sources outside the confinement root, bad tags, bad platforms. */
    char sub[4096];
    snprintf(sub, sizeof(sub), "%s/inside", e.dir);
    KT_REQUIRE(mkdir(sub, 0755) == 0);
    o.confine = sub;
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_import(e.s, "/etc", "x:1", &o, NULL, &err), KILN_EPERM);
    kiln_error_free(&err);
    o.confine = NULL;
    KT_EXPECT_INT(psh_store_import(e.s, sub, "Bad:1", &o, NULL, &err), KILN_EINVAL);
    kiln_error_free(&err);
    o.platform.architecture = "x86_64";
    KT_EXPECT_INT(psh_store_import(e.s, sub, "x:1", &o, NULL, &err), KILN_EINVAL);
    kiln_error_free(&err);
    char *after = index_bytes(&e);
    KT_EXPECT_STR(after, before);
    free(before);
    free(after);
    fx_env_close(&e);
}

KT_TEST(import_layout_verifies_every_blob)
{
    fx_env e, e2;
    KT_REQUIRE(fx_env_open(&e) == 0);
    KT_REQUIRE(fx_env_open(&e2) == 0);
    char m1[KILN_DIGEST_STRLEN + 1], m2[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    KT_REQUIRE(fx_fake_image(e.s, "two", m2) == 0);
    KT_REQUIRE(psh_store_tag(e.s, m1, "one:1", NULL) == 0);
    KT_REQUIRE(psh_store_tag(e.s, m2, "two:1", NULL) == 0);
    psh_import_opts o;
    opts(&o);
    char *before = index_bytes(&e2);
    kiln_error *err = NULL;
    /* Two images and no name: which one? */
    KT_EXPECT_INT(psh_store_import(e2.s, psh_store_path(e.s), "x:1", &o, NULL, &err), KILN_EINVAL);
    kiln_error_free(&err);
    o.layout_ref = "nothere:1";
    KT_EXPECT_INT(psh_store_import(e2.s, psh_store_path(e.s), "x:1", &o, NULL, &err), KILN_ENOENT);
    kiln_error_free(&err);
    /* A corrupted layer: nothing is tagged. */
    char *buf = NULL;
    KT_REQUIRE(psh_store_read_blob(e.s, m2, 1 << 20, &buf, NULL, NULL) == 0);
    cJSON *man = cJSON_Parse(buf);
    free(buf);
    const char *ld =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(man, "layers"), 0), "digest")
            ->valuestring;
    char lp[4096];
    snprintf(lp, sizeof(lp), "%s/blobs/sha256/%s", psh_store_path(e.s), ld + 7);
    cJSON_Delete(man);
    KT_REQUIRE(kt_write_file(lp, "tampered") == 0);
    o.layout_ref = "docker.io/library/two:1"; /* matched as a reference */
    KT_EXPECT_INT(psh_store_import(e2.s, psh_store_path(e.s), "x:1", &o, NULL, &err), KILN_EINVAL);
    KT_EXPECT(err && strstr(err->msg, "mismatch"));
    kiln_error_free(&err);
    char *after = index_bytes(&e2);
    KT_EXPECT_STR(after, before);
    free(after);
    /* The intact image copies over. */
    o.layout_ref = "one:1";
    psh_descriptor d;
    KT_EXPECT_INT(psh_store_import(e2.s, psh_store_path(e.s), "copy:1", &o, &d, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_STR(d.digest, m1);
    psh_inspect in;
    KT_EXPECT_INT(psh_store_inspect(e2.s, "copy:1", &in, NULL), 0);
    psh_inspect_dispose(&in);
    free(before);
    fx_env_close(&e2);
    fx_env_close(&e);
}

KT_TEST(export_targets_and_destinations)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    psh_export_kind k;
    const char *p = NULL;
    KT_EXPECT_INT(psh_export_target_parse("oci:/x/y", &k, &p, NULL), 0);
    KT_EXPECT_INT(k, PSH_EXPORT_OCI_DIR);
    KT_EXPECT_STR(p, "/x/y");
    KT_EXPECT_INT(psh_export_target_parse("oci-archive:f.tar", &k, &p, NULL), 0);
    KT_EXPECT_INT(k, PSH_EXPORT_OCI_ARCHIVE);
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_export_target_parse("docker-archive:f", &k, &p, &err), KILN_EINVAL);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_export_target_parse("oci:", &k, &p, &err), KILN_EINVAL);
    kiln_error_free(&err);

    char m1[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    KT_REQUIRE(psh_store_tag(e.s, m1, "one:1", NULL) == 0);
    char busy[4096], out[4096];
    snprintf(busy, sizeof(busy), "%s/busy", e.dir);
    KT_REQUIRE(kt_sh("mkdir -p %s && touch %s/file", busy, busy) == 0);
    KT_EXPECT_INT(psh_store_export(e.s, "one:1", PSH_EXPORT_OCI_DIR, busy, NULL, &err),
                  KILN_EEXIST);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_export(e.s, "one:1", PSH_EXPORT_OCI_DIR, "/tmp/x", e.dir, &err),
                  KILN_EPERM);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_export(e.s, "none:1", PSH_EXPORT_OCI_DIR, "/tmp/x", NULL, &err),
                  KILN_ENOENT);
    kiln_error_free(&err);

    /* By digest: the layout carries the image without a tag. */
    snprintf(out, sizeof(out), "%s/bydigest", e.dir);
    KT_EXPECT_INT(psh_store_export(e.s, m1, PSH_EXPORT_OCI_DIR, out, e.dir, &err), 0);
    kiln_error_free(&err);
    char ip[4200];
    snprintf(ip, sizeof(ip), "%s/index.json", out);
    char *idx = kt_read_file(ip, NULL);
    KT_EXPECT(idx && strstr(idx, m1) && !strstr(idx, "ref.name"));
    free(idx);
    snprintf(ip, sizeof(ip), "%s/blobs/sha256", out);
    KT_EXPECT_INT(kt_count_dir(ip), 3);
    fx_env_close(&e);
}
