/* kiln_code <-> kiln.v1.Code: the mapping is 1:1 and names agree. */
#include "kt.h"
#include "error.h"
#include "kiln/kiln.pb-c.h"

#include <ctype.h>
#include <errno.h>

KT_TEST(every_wire_code_maps_to_a_c_code_with_the_same_name)
{
    const ProtobufCEnumDescriptor *d = &kiln__v1__code__descriptor;
    KT_EXPECT_INT(d->n_values, KILN_CODE_COUNT);
    for (unsigned i = 0; i < d->n_values; i++) {
        const ProtobufCEnumValue *v = &d->values[i];
        kiln_code c = kiln_code_from_wire(v->value);
        KT_EXPECT_INT(kiln_code_to_wire(c), v->value);
        KT_EXPECT_INT(c, -v->value);
        KT_EXPECT_STR(kiln_code_name(c), v->name);
    }
}

KT_TEST(every_c_code_maps_to_a_wire_code)
{
    const ProtobufCEnumDescriptor *d = &kiln__v1__code__descriptor;
    for (int i = 0; i < KILN_CODE_COUNT; i++) {
        kiln_code c = (kiln_code)-i;
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, kiln_code_to_wire(c));
        KT_REQUIRE(v != NULL);
        KT_EXPECT_STR(v->name, kiln_code_name(c));
    }
}

KT_TEST(unknown_wire_codes_are_internal)
{
    KT_EXPECT_INT(kiln_code_from_wire(99), KILN_EINTERNAL);
    KT_EXPECT_INT(kiln_code_from_wire(-1), KILN_EINTERNAL);
    KT_EXPECT_STR(kiln_code_name((kiln_code)-77), "UNKNOWN");
}

KT_TEST(set_and_wrap_build_the_message)
{
    kiln_error *err = NULL;
    int r = kiln_error_set(&err, KILN_ENOENT, ENOENT, "open %s", "/x");
    KT_EXPECT_INT(r, KILN_ENOENT);
    KT_REQUIRE(err != NULL);
    KT_EXPECT_STR(err->msg, "open /x: No such file or directory");
    KT_EXPECT_INT(kiln_error_wrap(&err, "load %d", 7), KILN_ENOENT);
    KT_EXPECT_STR(err->msg, "load 7: open /x: No such file or directory");
    /* A second set keeps the first cause. */
    kiln_error_set(&err, KILN_EIO, 0, "later");
    KT_EXPECT_INT(err->code, KILN_ENOENT);
    kiln_error_free(&err);
    KT_EXPECT(err == NULL);
    kiln_error_free(&err);
    KT_EXPECT_INT(kiln_error_set(NULL, KILN_EPERM, 0, "x"), KILN_EPERM);
}

KT_TEST(errno_mapping)
{
    KT_EXPECT_INT(kiln_code_from_errno(ENOENT), KILN_ENOENT);
    KT_EXPECT_INT(kiln_code_from_errno(EACCES), KILN_EPERM);
    KT_EXPECT_INT(kiln_code_from_errno(ENOSPC), KILN_ENOSPC);
    KT_EXPECT_INT(kiln_code_from_errno(ECONNREFUSED), KILN_EUNAVAIL);
    KT_EXPECT_INT(kiln_code_from_errno(EBADF), KILN_EIO);
}
