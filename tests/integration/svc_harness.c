/* Process and filesystem helpers for the integration tests. */
#include "svc_harness.h"
#include "units.h"
#include "rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int th_spawn(th_proc *p, const char *dir, const char *name, char *const argv[])
{
    snprintf(p->log, sizeof(p->log), "%s/%s.log", dir, name);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        /* Children must not inherit a blocked signal mask from the test. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

int th_wait_ready(const char *url, int timeout_ms)
{
    unsigned long long dl = kiln_now_ms() + (unsigned long long)timeout_ms;
    while (kiln_now_ms() < dl) {
        kiln_rpc_client *c = NULL;
        kiln_error *err = NULL;
        if (kiln_rpc_client_new(&c, url, NULL, true, &err) == 0) {
            kiln_req req = KILN__V1__REQUEST__INIT;
            Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
            req.body_case = KILN__V1__REQUEST__BODY_STATUS;
            req.status = &sr;
            kiln_reply *rep = NULL;
            int r = kiln_rpc_call(c, &req, &rep, 1000, &err);
            kiln_rpc_reply_free(rep);
            kiln_rpc_client_free(c);
            if (r == 0)
                return 0;
        }
        kiln_error_free(&err);
        usleep(20000);
    }
    return -1;
}

int th_stop(th_proc *p, int timeout_ms, int *elapsed_ms)
{
    if (p->pid <= 0)
        return -1;
    unsigned long long t0 = kiln_now_ms();
    kill(p->pid, SIGTERM);
    int st = 0;
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid)
            break;
        if (kiln_now_ms() - t0 > (unsigned long long)timeout_ms) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            p->pid = 0;
            return -1;
        }
        usleep(5000);
    }
    if (elapsed_ms)
        *elapsed_ms = (int)(kiln_now_ms() - t0);
    p->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

const char *th_bin(const char *env)
{
    const char *v = getenv(env);
    if (v == NULL || *v == '\0') {
        fprintf(stderr, "environment variable %s (path of a built binary) is not set\n", env);
        exit(1);
    }
    return v;
}
