/* The sandbox child's reports to its parent (sbx_msg over the report pipe):
 * what failed while the RUN's world was being set up, and its stages.
 * Used by child.c, mounts.c and rootfs.c. */
#include "sbx_run.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fs.h"

void sbx_report(const sbx_plan *p, int type, int code, int sys_errno, int value, const char *fmt,
                ...)
{
    sbx_msg m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.code = code;
    m.sys_errno = sys_errno;
    m.value = value;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m.text, sizeof(m.text), fmt, ap);
    va_end(ap);
    (void)kiln_write_all(p->report_w, &m, sizeof(m));
}
