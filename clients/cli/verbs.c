/* The tables the CLI is made of: its verbs and its global options.  The
 * parser in main.c, shell completion and the man pages (cmd_completion.c)
 * all read these, so they cannot drift apart. */
#include "cli.h"
#include "cleanup.h"
#include "config.h"

#include <getopt.h>

const cli_verb cli_verbs[] = {
    {"build", cli_cmd_build, "build an image from a Dockerfile (--plan: only resolve it)",
     cli_build_opts, CLI_ARGS_PATH, NULL, NULL},
    {"status", cli_cmd_status, "show the health of kiln-builder and kiln-pusher", cli_status_opts,
     CLI_ARGS_NONE, NULL, NULL},
    {"cancel", cli_cmd_cancel, "cancel running jobs (builds, pushes, pulls)", cli_cancel_opts,
     CLI_ARGS_NONE, NULL, NULL},
    {"events", cli_cmd_events, "follow a job's events (or every job), with replay", cli_events_opts,
     CLI_ARGS_NONE, NULL, NULL},
    {"images", cli_cmd_images, "list the images in the store", cli_images_opts, CLI_ARGS_NONE, NULL,
     NULL},
    {"tag", cli_cmd_tag, "tag an image in the store", cli_help_only_opts, CLI_ARGS_IMAGE, NULL,
     NULL},
    {"inspect", cli_cmd_inspect, "print an image's manifest and config", cli_help_only_opts,
     CLI_ARGS_IMAGE, NULL, NULL},
    {"history", cli_cmd_history, "show the steps an image was made of, with their layers",
     cli_history_opts, CLI_ARGS_IMAGE, NULL, NULL},
    {"rmi", cli_cmd_rmi, "remove tags from the store", cli_help_only_opts, CLI_ARGS_IMAGE, NULL,
     NULL},
    {"import", cli_cmd_import, "import an image archive or layout, or a rootfs, as an image",
     cli_import_opts, CLI_ARGS_PATH, NULL, NULL},
    {"export", cli_cmd_export, "write an image as oci:DIR or oci-archive:FILE", cli_export_opts,
     CLI_ARGS_IMAGE, NULL, NULL},
    {"prune", cli_cmd_prune, "delete unused build cache, contexts and store blobs", cli_prune_opts,
     CLI_ARGS_NONE, NULL, NULL},
    {"push", cli_cmd_push, "push an image to a registry", cli_push_opts, CLI_ARGS_IMAGE, NULL,
     NULL},
    {"login", cli_cmd_login, "check and store credentials for a registry", cli_login_opts,
     CLI_ARGS_NONE, NULL, NULL},
    {"logout", cli_cmd_logout, "remove a registry's stored credentials", cli_logout_opts,
     CLI_ARGS_NONE, NULL, NULL},
    {"pull", cli_cmd_pull, "pull an image from a registry into the store", cli_pull_opts,
     CLI_ARGS_NONE, NULL, NULL},
    {"manifest", cli_cmd_manifest, "create, edit, inspect and push manifest lists", NULL,
     CLI_ARGS_IMAGE, NULL, cli_manifest_subverbs},
    {"config", cli_cmd_config, "show the client's settings and where each came from",
     cli_config_opts, CLI_ARGS_NONE, NULL, NULL},
    {"completion", cli_cmd_completion, "print a shell completion script (bash, zsh, fish)",
     cli_help_only_opts, CLI_ARGS_WORDS, "bash zsh fish", NULL},
};
const size_t cli_n_verbs = KILN_ARRAY_SIZE(cli_verbs);

const struct option cli_global_opts[] = {
    {"builder", required_argument, NULL, CLI_G_BUILDER},
    {"pusher", required_argument, NULL, CLI_G_PUSHER},
    {"data", required_argument, NULL, CLI_G_DATA},
    {"tls-cert", required_argument, NULL, CLI_G_CERT},
    {"tls-key", required_argument, NULL, CLI_G_KEY},
    {"tls-ca", required_argument, NULL, CLI_G_CA},
    {"tls-server-name", required_argument, NULL, CLI_G_SNI},
    {"tls-insecure-skip-verify", no_argument, NULL, CLI_G_SKIPVERIFY},
    {"timeout", required_argument, NULL, CLI_G_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0}};
