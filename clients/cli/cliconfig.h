/* The kiln client's settings and where each came from: a global flag, an
 * environment variable, the config file ($XDG_CONFIG_HOME/kiln/config.json,
 * default ~/.config/kiln/config.json), or the built-in default, in that
 * order of precedence.  One table (cliconfig.c) lists every setting, so
 * `kiln config` shows exactly what the other verbs use.  Not thread-safe:
 * filled by main() before any verb runs, read-only afterwards. */
#ifndef CLI_CONFIG_H
#define CLI_CONFIG_H

#include <stdbool.h>

#include "error.h"

typedef enum cli_setting_id {
    CLI_SET_BUILDER,
    CLI_SET_PUSHER,
    CLI_SET_BUILDER_EVENTS, /* instead of the URL the builder's Status names */
    CLI_SET_PUSHER_EVENTS,
    CLI_SET_DATA,
    CLI_SET_TLS_CA,
    CLI_SET_TLS_CERT,
    CLI_SET_TLS_KEY,
    CLI_SET_TLS_SERVER_NAME,
    CLI_SET_TIMEOUT,
    CLI_SET_PROGRESS,
    CLI_SET_INSECURE_REGISTRIES, /* "host[:port],..." */
    CLI_SET_N
} cli_setting_id;

typedef struct cli_setting {
    const char *key;    /* as written in the file: "builder", "tls.ca", ... */
    const char *env[2]; /* the variables that set it, first wins (NULL: none) */
    const char *value;  /* NULL: unset (the default applies) */
    char source[4200];  /* "flag --builder", "env KILN_BUILDER", the file's path, "default" */
} cli_setting;

/* A global flag's value (borrowed: argv outlives the program's run). */
void cli_config_flag(cli_setting_id id, const char *value);
/* Reads the config file (a missing file is no error) and settles every
 * setting: flag, else environment, else file.  A malformed file, an unknown
 * key or a value of the wrong type fails with a message naming the file and
 * the line or key. */
int cli_config_load(kiln_error **err);
/* The setting (never NULL); ->value NULL when nothing set it. */
const cli_setting *cli_config_get(cli_setting_id id);
/* Whether registry (host[:port], as cli_ref_registry names it) is one of
 * the insecure registries: plain HTTP or unverified TLS allowed, as with
 * --tls-verify=false. */
bool cli_config_insecure_registry(const char *registry);
/* The config file's path (static storage; "" when no home is known). */
const char *cli_config_path(void);

#endif
