/* kiln-probe ssh-agent: talks to the SSH agent at $SSH_AUTH_SOCK as ssh and
 * ssh-add do (the agent protocol: 4-byte big-endian length, type byte,
 * body), for the --ssh tests; busybox has no ssh-add.
 *
 *   kiln-probe ssh-agent list        "sock=S", "reply=T keys=N", "key=COMMENT"…
 *   kiln-probe ssh-agent sign        lists, then asks a signature of "kiln" by
 *                                    the first key: "sign=T" (14: a signature)
 *   kiln-probe ssh-agent send TYPE   a message of TYPE with no body: "reply=T"
 * Exit 0 when the agent answered, 1 when it could not be reached. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "probe.h"

#define MSG_MAX (256 * 1024)

static unsigned char msg[MSG_MAX];

static int full(int fd, void *buf, size_t n, int rd)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t k = rd ? read(fd, p, n) : write(fd, p, n);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Sends body[0..len) as one message; the reply's length (in msg), or -1. */
static long call(const unsigned char *body, size_t len)
{
    const char *sock = getenv("SSH_AUTH_SOCK");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (sock == NULL || strlen(sock) >= sizeof(sa.sun_path)) {
        printf("sock=none\n");
        return -1;
    }
    strcpy(sa.sun_path, sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    unsigned char hdr[4];
    put32(hdr, (uint32_t)len);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || full(fd, hdr, 4, 0) < 0 ||
        full(fd, (void *)body, len, 0) < 0 || full(fd, hdr, 4, 1) < 0 || be32(hdr) == 0 ||
        be32(hdr) > MSG_MAX || full(fd, msg, be32(hdr), 1) < 0) {
        printf("sock=%s error=%d\n", sock, errno);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return (long)be32(hdr);
}

/* The identities answer: prints them; the first key blob in *key. */
static int list(const unsigned char **key, uint32_t *key_len)
{
    unsigned char q[] = {11}; /* SSH_AGENTC_REQUEST_IDENTITIES */
    long n = call(q, sizeof(q));
    if (n < 0)
        return 1;
    printf("sock=%s\n", getenv("SSH_AUTH_SOCK"));
    if (msg[0] != 12 || n < 5) { /* SSH_AGENT_IDENTITIES_ANSWER */
        printf("reply=%u keys=0\n", msg[0]);
        return 0;
    }
    uint32_t keys = be32(msg + 1);
    printf("reply=12 keys=%u\n", keys);
    size_t off = 5;
    for (uint32_t i = 0; i < keys && off + 4 <= (size_t)n; i++) {
        uint32_t bl = be32(msg + off);
        if (off + 4 + bl + 4 > (size_t)n)
            break;
        if (i == 0 && key) {
            *key = msg + off + 4;
            *key_len = bl;
        }
        off += 4 + bl;
        uint32_t cl = be32(msg + off);
        if (off + 4 + cl > (size_t)n)
            break;
        printf("key=%.*s\n", (int)cl, (const char *)msg + off + 4);
        off += 4 + cl;
    }
    return 0;
}

static int sign(void)
{
    const unsigned char *key = NULL;
    uint32_t kl = 0;
    if (list(&key, &kl) != 0 || key == NULL)
        return 1;
    static unsigned char q[MSG_MAX];
    size_t n = 0;
    q[n++] = 13; /* SSH_AGENTC_SIGN_REQUEST: key blob, data, flags */
    put32(q + n, kl);
    memmove(q + n + 4, key, kl); /* key points into msg, which call() reuses */
    n += 4 + kl;
    put32(q + n, 4);
    memcpy(q + n + 4, "kiln", 4);
    n += 8;
    put32(q + n, 0);
    n += 4;
    if (call(q, n) < 0)
        return 1;
    printf("sign=%u\n", msg[0]);
    return 0;
}

int probe_ssh_agent(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "list"))
        return list(NULL, NULL);
    if (argc >= 1 && !strcmp(argv[0], "sign"))
        return sign();
    if (argc >= 2 && !strcmp(argv[0], "send")) {
        unsigned char q[] = {(unsigned char)atoi(argv[1])};
        if (call(q, sizeof(q)) < 0)
            return 1;
        printf("reply=%u\n", msg[0]);
        return 0;
    }
    fprintf(stderr, "usage: kiln-probe ssh-agent list | sign | send TYPE\n");
    return 2;
}
