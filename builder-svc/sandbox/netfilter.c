/* The egress filter of the RUN's private network (see net.c): an nftables
 * table "kiln" with one output chain, built as netlink messages by hand (no
 * libnftnl), installed once in each private network namespace before pasta
 * connects it.  The command in the namespace has no CAP_NET_ADMIN and cannot
 * change it. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "sbx_run.h"

typedef struct nlb {
    char *buf;
    size_t len, cap;
    bool overflow;
} nlb;

static void *nl_put(nlb *b, size_t n)
{
    size_t al = NLMSG_ALIGN(n);
    if (b->len + al > b->cap) {
        b->overflow = true;
        return NULL;
    }
    void *p = b->buf + b->len;
    memset(p, 0, al);
    b->len += al;
    return p;
}

static size_t nl_msg(nlb *b, uint16_t type, uint16_t flags, uint32_t seq, uint16_t res)
{
    size_t at = b->len;
    struct nlmsghdr *h = nl_put(b, NLMSG_HDRLEN);
    struct nfgenmsg *g = nl_put(b, sizeof(struct nfgenmsg));
    if (h == NULL || g == NULL)
        return at;
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | flags;
    h->nlmsg_seq = seq;
    g->nfgen_family = NFPROTO_INET;
    g->version = NFNETLINK_V0;
    g->res_id = htons(res);
    return at;
}

static void nl_msg_end(nlb *b, size_t at)
{
    if (!b->overflow)
        ((struct nlmsghdr *)(b->buf + at))->nlmsg_len = (uint32_t)(b->len - at);
}

static void nl_attr(nlb *b, uint16_t type, const void *data, size_t n)
{
    struct nlattr *a = nl_put(b, NLA_HDRLEN + n);
    if (a == NULL)
        return;
    a->nla_type = type;
    a->nla_len = (uint16_t)(NLA_HDRLEN + n);
    memcpy((char *)a + NLA_HDRLEN, data, n);
}

static void nl_u32(nlb *b, uint16_t type, uint32_t host)
{
    uint32_t be = htonl(host);
    nl_attr(b, type, &be, sizeof(be));
}

static void nl_str(nlb *b, uint16_t type, const char *s)
{
    nl_attr(b, type, s, strlen(s) + 1);
}

static size_t nl_nest(nlb *b, uint16_t type)
{
    size_t at = b->len;
    struct nlattr *a = nl_put(b, NLA_HDRLEN);
    if (a)
        a->nla_type = type | NLA_F_NESTED;
    return at;
}

static void nl_nest_end(nlb *b, size_t at)
{
    if (!b->overflow)
        ((struct nlattr *)(b->buf + at))->nla_len = (uint16_t)(b->len - at);
}

/* One expression of a rule: name and its NFTA_EXPR_DATA attributes. */
static size_t expr_begin(nlb *b, const char *name)
{
    size_t el = nl_nest(b, NFTA_LIST_ELEM);
    nl_str(b, NFTA_EXPR_NAME, name);
    nl_nest(b, NFTA_EXPR_DATA);
    return el;
}

static void expr_end(nlb *b, size_t el)
{
    /* the data nest is the second attribute after the name */
    struct nlattr *name = (struct nlattr *)(b->buf + el + NLA_HDRLEN);
    size_t data = el + NLA_HDRLEN + NLA_ALIGN(name->nla_len);
    nl_nest_end(b, data);
    nl_nest_end(b, el);
}

static void e_meta(nlb *b, uint32_t key)
{
    size_t e = expr_begin(b, "meta");
    nl_u32(b, NFTA_META_DREG, NFT_REG_1);
    nl_u32(b, NFTA_META_KEY, key);
    expr_end(b, e);
}

static void e_payload(nlb *b, uint32_t base, uint32_t off, uint32_t len)
{
    size_t e = expr_begin(b, "payload");
    nl_u32(b, NFTA_PAYLOAD_DREG, NFT_REG_1);
    nl_u32(b, NFTA_PAYLOAD_BASE, base);
    nl_u32(b, NFTA_PAYLOAD_OFFSET, off);
    nl_u32(b, NFTA_PAYLOAD_LEN, len);
    expr_end(b, e);
}

static void e_cmp(nlb *b, uint32_t op, const void *v, size_t n)
{
    size_t e = expr_begin(b, "cmp");
    nl_u32(b, NFTA_CMP_SREG, NFT_REG_1);
    nl_u32(b, NFTA_CMP_OP, op);
    size_t d = nl_nest(b, NFTA_CMP_DATA);
    nl_attr(b, NFTA_DATA_VALUE, v, n);
    nl_nest_end(b, d);
    expr_end(b, e);
}

static void e_mask(nlb *b, const void *mask, size_t n)
{
    static const unsigned char zero[16];
    size_t e = expr_begin(b, "bitwise");
    nl_u32(b, NFTA_BITWISE_SREG, NFT_REG_1);
    nl_u32(b, NFTA_BITWISE_DREG, NFT_REG_1);
    nl_u32(b, NFTA_BITWISE_LEN, (uint32_t)n);
    size_t d = nl_nest(b, NFTA_BITWISE_MASK);
    nl_attr(b, NFTA_DATA_VALUE, mask, n);
    nl_nest_end(b, d);
    d = nl_nest(b, NFTA_BITWISE_XOR);
    nl_attr(b, NFTA_DATA_VALUE, zero, n);
    nl_nest_end(b, d);
    expr_end(b, e);
}

static void e_verdict(nlb *b, bool accept)
{
    size_t e;
    if (accept) {
        e = expr_begin(b, "immediate");
        nl_u32(b, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        size_t d = nl_nest(b, NFTA_IMMEDIATE_DATA);
        size_t v = nl_nest(b, NFTA_DATA_VERDICT);
        nl_u32(b, NFTA_VERDICT_CODE, NF_ACCEPT);
        nl_nest_end(b, v);
        nl_nest_end(b, d);
    } else {
        /* an immediate error for the caller, not a silent timeout */
        e = expr_begin(b, "reject");
        nl_u32(b, NFTA_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
        uint8_t code = NFT_REJECT_ICMPX_ADMIN_PROHIBITED;
        nl_attr(b, NFTA_REJECT_ICMP_CODE, &code, 1);
    }
    expr_end(b, e);
}

typedef struct match {
    uint8_t nfproto;
    const void *addr, *mask; /* destination address and prefix mask */
    size_t alen;
    bool not_lo;      /* only when leaving by another device than lo */
    int l4proto;      /* -1: any */
    bool l4proto_not; /* l4proto is excluded rather than required */
    int dport;        /* -1: any */
    bool accept;
} match;

static void add_rule(nlb *b, uint32_t seq, const match *m)
{
    size_t msg = nl_msg(b, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
                        NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, seq, 0);
    nl_str(b, NFTA_RULE_TABLE, "kiln");
    nl_str(b, NFTA_RULE_CHAIN, "out");
    size_t ex = nl_nest(b, NFTA_RULE_EXPRESSIONS);
    e_meta(b, NFT_META_NFPROTO);
    e_cmp(b, NFT_CMP_EQ, &m->nfproto, 1);
    e_payload(b, NFT_PAYLOAD_NETWORK_HEADER, m->nfproto == NFPROTO_IPV4 ? 16 : 24,
              (uint32_t)m->alen);
    e_mask(b, m->mask, m->alen);
    e_cmp(b, NFT_CMP_EQ, m->addr, m->alen);
    if (m->not_lo) {
        uint32_t lo = 1; /* the loopback device's index in every namespace */
        e_meta(b, NFT_META_OIF);
        e_cmp(b, NFT_CMP_NEQ, &lo, sizeof(lo));
    }
    if (m->l4proto >= 0) {
        uint8_t pr = (uint8_t)m->l4proto;
        e_meta(b, NFT_META_L4PROTO);
        e_cmp(b, m->l4proto_not ? NFT_CMP_NEQ : NFT_CMP_EQ, &pr, 1);
    }
    if (m->dport >= 0) {
        uint16_t port = htons((uint16_t)m->dport);
        e_payload(b, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
        e_cmp(b, NFT_CMP_EQ, &port, 2);
    }
    e_verdict(b, m->accept);
    nl_nest_end(b, ex);
    nl_msg_end(b, msg);
}

int sbx_net_filter(bool dns_forward)
{
    static const unsigned char v4_127[4] = {127, 0, 0, 0}, v4_m8[4] = {255, 0, 0, 0},
                               v4_ll[4] = {169, 254, 0, 0}, v4_m16[4] = {255, 255, 0, 0},
                               v4_m32[4] = {255, 255, 255, 255}, v6_lo[16] = {[15] = 1},
                               v6_ll[16] = {0xfe, 0x80}, v6_m10[16] = {0xff, 0xc0},
                               v6_m128[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                              0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    struct in_addr dns;
    inet_pton(AF_INET, SBX_NET_DNS, &dns);
    char mem[8192];
    nlb b = {mem, 0, sizeof(mem), false};
    uint32_t seq = (uint32_t)time(NULL);
    size_t m = nl_msg(&b, NFNL_MSG_BATCH_BEGIN, 0, seq++, NFNL_SUBSYS_NFTABLES);
    nl_msg_end(&b, m);
    m = nl_msg(&b, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, seq++,
               0);
    nl_str(&b, NFTA_TABLE_NAME, "kiln");
    nl_msg_end(&b, m);
    m = nl_msg(&b, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, seq++,
               0);
    nl_str(&b, NFTA_CHAIN_TABLE, "kiln");
    nl_str(&b, NFTA_CHAIN_NAME, "out");
    size_t hook = nl_nest(&b, NFTA_CHAIN_HOOK);
    nl_u32(&b, NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_OUT);
    nl_u32(&b, NFTA_HOOK_PRIORITY, 0);
    nl_nest_end(&b, hook);
    nl_u32(&b, NFTA_CHAIN_POLICY, NF_ACCEPT);
    nl_str(&b, NFTA_CHAIN_TYPE, "filter");
    nl_msg_end(&b, m);
    match rules[] = {
        /* pasta's DNS forwarding address: UDP port 53 only */
        {NFPROTO_IPV4, &dns, v4_m32, 4, false, IPPROTO_UDP, false, 53, true},
        {NFPROTO_IPV4, v4_ll, v4_m16, 4, false, -1, false, -1, false},
        {NFPROTO_IPV4, v4_127, v4_m8, 4, true, -1, false, -1, false},
        {NFPROTO_IPV6, v6_lo, v6_m128, 16, true, -1, false, -1, false},
        /* neighbour discovery towards a link-local gateway stays possible */
        {NFPROTO_IPV6, v6_ll, v6_m10, 16, false, IPPROTO_ICMPV6, true, -1, false},
    };
    for (size_t i = dns_forward ? 0 : 1; i < KILN_ARRAY_SIZE(rules); i++)
        add_rule(&b, seq++, &rules[i]);
    m = nl_msg(&b, NFNL_MSG_BATCH_END, 0, seq++, NFNL_SUBSYS_NFTABLES);
    nl_msg_end(&b, m);
    if (b.overflow) {
        errno = ENOBUFS;
        return -1;
    }
    _cleanup_close_ int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (s < 0 || sendto(s, b.buf, b.len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    /* One ack per table, chain and rule; the first error wins. */
    size_t want = 2 + KILN_ARRAY_SIZE(rules) - (dns_forward ? 0 : 1);
    char rbuf[8192];
    while (want > 0) {
        struct pollfd pf = {s, POLLIN, 0};
        if (poll(&pf, 1, 5000) <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        ssize_t n = recv(s, rbuf, sizeof(rbuf), 0);
        if (n < 0)
            return -1;
        for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type != NLMSG_ERROR)
                continue;
            const struct nlmsgerr *e = NLMSG_DATA(h);
            if (e->error != 0) {
                errno = -e->error;
                return -1;
            }
            want--;
        }
    }
    return 0;
}
