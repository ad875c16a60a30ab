/* Defaults for paths and endpoints. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *kiln_default_data_dir(void)
{
    const char *env = getenv("KILN_DATA");
    if (env && *env)
        return strdup(env);
    if (geteuid() == 0)
        return strdup("/var/lib/kiln");
    char *out = NULL;
    const char *xdg = getenv("XDG_DATA_HOME");
    if (xdg && *xdg) {
        if (asprintf(&out, "%s/kiln", xdg) < 0)
            return NULL;
        return out;
    }
    const char *home = getenv("HOME");
    if (asprintf(&out, "%s/.local/share/kiln", home && *home ? home : "/tmp") < 0)
        return NULL;
    return out;
}

char *kiln_default_url(const char *data_dir, kiln_endpoint ep)
{
    static const char *const names[] = {"builder.sock", "builder-events.sock", "pusher.sock",
                                        "pusher-events.sock"};
    char *out = NULL;
    if (asprintf(&out, "ipc://%s/run/%s", data_dir, names[ep]) < 0)
        return NULL;
    return out;
}
