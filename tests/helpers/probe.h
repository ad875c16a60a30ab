/* kiln-probe's subcommands kept in files of their own. */
#ifndef KILN_PROBE_H
#define KILN_PROBE_H

/* probe_ssh.c: `kiln-probe ssh-agent ARGS…` (argv after "ssh-agent"). */
int probe_ssh_agent(int argc, char **argv);

#endif
