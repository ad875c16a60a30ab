/* The CLI's pool placement (clients/cli/pool.c): rendezvous hashing moves
 * only the keys of a node that leaves or joins, spreads keys evenly, and the
 * bounded-load choice passes over nodes at capacity or above 1.25x the mean,
 * draining, unready or unreachable nodes, and nodes of another platform. */
#include "kt.h"
#include "pool.h"

#include <stdio.h>
#include <string.h>

#define KEYS 2000

static void node(cli_pool_node *n, const char *name, unsigned load, unsigned cap)
{
    memset(n, 0, sizeof(*n));
    snprintf(n->name, sizeof(n->name), "%s", name);
    snprintf(n->url, sizeof(n->url), "tls+tcp://%s:7403", name);
    snprintf(n->platforms, sizeof(n->platforms), "linux/amd64,linux/arm64");
    n->reachable = n->ready = true;
    n->running = load;
    n->capacity = cap;
}

/* The node (name) a key goes to on an idle pool. */
static const char *owner(cli_pool_node *nodes, size_t n, const char *key)
{
    size_t order[CLI_POOL_MAX];
    char why[512];
    cli_pool_rank(nodes, n, key, order);
    int i = cli_pool_choose(nodes, n, order, NULL, NULL, why, sizeof(why));
    return i < 0 ? "" : nodes[i].name;
}

KT_TEST(score_is_deterministic_and_depends_on_key_and_node)
{
    KT_EXPECT(cli_pool_score("app\nDockerfile", "kiln-0") ==
              cli_pool_score("app\nDockerfile", "kiln-0"));
    KT_EXPECT(cli_pool_score("app\nDockerfile", "kiln-0") !=
              cli_pool_score("app\nDockerfile", "kiln-1"));
    KT_EXPECT(cli_pool_score("app\nDockerfile", "kiln-0") !=
              cli_pool_score("app2\nDockerfile", "kiln-0"));
    /* the separator: "ab"+"c" is not "a"+"bc" */
    KT_EXPECT(cli_pool_score("ab", "c") != cli_pool_score("a", "bc"));
}

KT_TEST(rank_orders_by_descending_score)
{
    cli_pool_node nodes[5];
    const char *names[5] = {"kiln-0", "kiln-1", "kiln-2", "kiln-3", "kiln-4"};
    for (int i = 0; i < 5; i++)
        node(&nodes[i], names[i], 0, 4);
    size_t order[CLI_POOL_MAX];
    cli_pool_rank(nodes, 5, "team/app\nDockerfile", order);
    bool seen[5] = {false};
    for (int k = 0; k < 5; k++) {
        KT_REQUIRE(order[k] < 5);
        KT_EXPECT(!seen[order[k]]);
        seen[order[k]] = true;
        if (k)
            KT_EXPECT(cli_pool_score("team/app\nDockerfile", nodes[order[k - 1]].name) >=
                      cli_pool_score("team/app\nDockerfile", nodes[order[k]].name));
    }
}

KT_TEST(keys_spread_evenly_and_a_leaving_node_moves_only_its_own)
{
    cli_pool_node five[5], four[4];
    const char *names[5] = {"kiln-0", "kiln-1", "kiln-2", "kiln-3", "kiln-4"};
    for (int i = 0; i < 5; i++)
        node(&five[i], names[i], 0, 4);
    for (int i = 0; i < 4; i++) /* kiln-2 leaves */
        node(&four[i], names[i < 2 ? i : i + 1], 0, 4);
    int per[5] = {0}, moved = 0, owned_by_2 = 0;
    for (int k = 0; k < KEYS; k++) {
        char key[64];
        snprintf(key, sizeof(key), "project-%d\nDockerfile", k);
        const char *a = owner(five, 5, key), *b = owner(four, 4, key);
        per[a[5] - '0']++;
        if (strcmp(a, "kiln-2") == 0)
            owned_by_2++;
        else
            KT_EXPECT_STR(b, a); /* everyone else's keys stay */
        moved += strcmp(a, b) != 0;
    }
    KT_EXPECT_INT(moved, owned_by_2);
    for (int i = 0; i < 5; i++) /* about KEYS/5 = 400 each */
        KT_EXPECT(per[i] > 300 && per[i] < 500);
}

KT_TEST(a_joining_node_takes_keys_only_for_itself)
{
    cli_pool_node three[3], four[4];
    const char *names[4] = {"kiln-0", "kiln-1", "kiln-2", "kiln-3"};
    for (int i = 0; i < 4; i++) {
        if (i < 3)
            node(&three[i], names[i], 0, 4);
        node(&four[i], names[i], 0, 4);
    }
    int moved = 0;
    for (int k = 0; k < KEYS; k++) {
        char key[64];
        snprintf(key, sizeof(key), "repo/%d\nci/Dockerfile", k);
        const char *a = owner(three, 3, key), *b = owner(four, 4, key);
        if (strcmp(a, b) != 0) {
            KT_EXPECT_STR(b, "kiln-3");
            moved++;
        }
    }
    KT_EXPECT(moved > KEYS / 4 - 150 && moved < KEYS / 4 + 150);
}

KT_TEST(bounded_load_passes_over_a_node_at_capacity)
{
    cli_pool_node nodes[3];
    node(&nodes[0], "kiln-0", 0, 2);
    node(&nodes[1], "kiln-1", 0, 2);
    node(&nodes[2], "kiln-2", 0, 2);
    size_t order[CLI_POOL_MAX];
    char why[512];
    cli_pool_rank(nodes, 3, "hot\nDockerfile", order);
    int first = cli_pool_choose(nodes, 3, order, NULL, NULL, why, sizeof(why));
    KT_EXPECT_INT(first, (int)order[0]);
    KT_EXPECT_STR(why, "affinity");
    nodes[order[0]].running = 2; /* its capacity */
    int next = cli_pool_choose(nodes, 3, order, NULL, NULL, why, sizeof(why));
    KT_EXPECT_INT(next, (int)order[1]);
    KT_EXPECT(strstr(why, "at capacity (2/2)") != NULL);
    KT_EXPECT(strstr(why, nodes[order[0]].name) != NULL);
}

KT_TEST(bounded_load_passes_over_a_node_above_the_mean)
{
    cli_pool_node nodes[3];
    node(&nodes[0], "kiln-0", 0, 16);
    node(&nodes[1], "kiln-1", 0, 16);
    node(&nodes[2], "kiln-2", 0, 16);
    size_t order[CLI_POOL_MAX];
    char why[512];
    cli_pool_rank(nodes, 3, "hot\nDockerfile", order);
    /* loads 3,0,0: with this build the mean is 4/3, the bound ceil(1.25 * 4/3) = 2 */
    nodes[order[0]].running = 3;
    int i = cli_pool_choose(nodes, 3, order, NULL, NULL, why, sizeof(why));
    KT_EXPECT_INT(i, (int)order[1]);
    KT_EXPECT(strstr(why, "mean load") != NULL);
    /* loads 1,0,0: bound ceil(1.25 * 2/3) = 1 -> the affinity node (1+1 > 1) is passed over */
    nodes[order[0]].running = 1;
    i = cli_pool_choose(nodes, 3, order, NULL, NULL, why, sizeof(why));
    KT_EXPECT_INT(i, (int)order[1]);
    /* loads 1,1,1: bound ceil(1.25 * 4/3) = 2 -> back to affinity */
    nodes[order[1]].running = nodes[order[2]].running = 1;
    i = cli_pool_choose(nodes, 3, order, NULL, NULL, why, sizeof(why));
    KT_EXPECT_INT(i, (int)order[0]);
}

KT_TEST(six_concurrent_builds_of_one_project_spread_over_the_pool)
{
    cli_pool_node nodes[3];
    node(&nodes[0], "kiln-0", 0, 2);
    node(&nodes[1], "kiln-1", 0, 2);
    node(&nodes[2], "kiln-2", 0, 2);
    size_t order[CLI_POOL_MAX];
    char why[512];
    cli_pool_rank(nodes, 3, "one/project\nDockerfile", order);
    int used[3] = {0};
    for (int b = 0; b < 6; b++) {
        int i = cli_pool_choose(nodes, 3, order, NULL, NULL, why, sizeof(why));
        KT_REQUIRE(i >= 0);
        nodes[i].running++;
        used[i]++;
    }
    for (int i = 0; i < 3; i++)
        KT_EXPECT_INT(used[i], 2);
    /* a seventh queues on the affinity node */
    int i = cli_pool_choose(nodes, 3, order, NULL, NULL, why, sizeof(why));
    KT_EXPECT_INT(i, (int)order[0]);
    KT_EXPECT(strstr(why, "queued") != NULL);
}

KT_TEST(unready_draining_unreachable_tried_and_foreign_nodes_are_not_chosen)
{
    cli_pool_node nodes[4];
    node(&nodes[0], "kiln-0", 0, 4);
    node(&nodes[1], "kiln-1", 0, 4);
    node(&nodes[2], "kiln-2", 0, 4);
    node(&nodes[3], "kiln-3", 0, 4);
    nodes[0].draining = true;
    nodes[1].ready = false;
    nodes[2].reachable = false;
    snprintf(nodes[3].platforms, sizeof(nodes[3].platforms), "linux/amd64");
    size_t order[CLI_POOL_MAX];
    char why[512];
    cli_pool_rank(nodes, 4, "k", order);
    KT_EXPECT_INT(cli_pool_choose(nodes, 4, order, NULL, "linux/amd64", why, sizeof(why)), 3);
    KT_EXPECT_INT(cli_pool_choose(nodes, 4, order, NULL, "linux/arm64", why, sizeof(why)), -1);
    KT_EXPECT(strstr(why, "linux/arm64") != NULL);
    /* "linux/amd" is not a prefix match of linux/amd64 */
    KT_EXPECT_INT(cli_pool_choose(nodes, 4, order, NULL, "linux/amd", why, sizeof(why)), -1);
    bool tried[4] = {false, false, false, true};
    KT_EXPECT_INT(cli_pool_choose(nodes, 4, order, tried, NULL, why, sizeof(why)), -1);
}

KT_TEST(failover_order_is_the_hash_order)
{
    cli_pool_node nodes[3];
    node(&nodes[0], "kiln-0", 0, 4);
    node(&nodes[1], "kiln-1", 0, 4);
    node(&nodes[2], "kiln-2", 0, 4);
    size_t order[CLI_POOL_MAX];
    char why[512];
    cli_pool_rank(nodes, 3, "team/app\nDockerfile", order);
    bool tried[3] = {false, false, false};
    for (int k = 0; k < 3; k++) {
        int i = cli_pool_choose(nodes, 3, order, tried, NULL, why, sizeof(why));
        KT_EXPECT_INT(i, (int)order[k]);
        tried[i] = true;
    }
}

KT_TEST(default_affinity_key)
{
    char k[512];
    cli_pool_default_key(k, sizeof(k), "localhost:5000/team/app:1.2", NULL, "/src/app");
    KT_EXPECT_STR(k, "localhost:5000/team/app\nDockerfile");
    cli_pool_default_key(k, sizeof(k), "app@sha256:0123", "/src/app/ci/Dockerfile.x", "/src/app");
    KT_EXPECT_STR(k, "app\nci/Dockerfile.x");
    cli_pool_default_key(k, sizeof(k), "app", "/elsewhere/Dockerfile", "/src/app");
    KT_EXPECT_STR(k, "app\n/elsewhere/Dockerfile");
    cli_pool_default_key(k, sizeof(k), NULL, NULL, "/src/app");
    KT_EXPECT_STR(k, "context:app\nDockerfile");
    /* two tags of one repository place alike */
    char k2[512];
    cli_pool_default_key(k, sizeof(k), "team/app:1", NULL, "/c");
    cli_pool_default_key(k2, sizeof(k2), "team/app:2", NULL, "/c");
    KT_EXPECT_STR(k, k2);
}

KT_TEST(pool_specs)
{
    KT_EXPECT(!cli_pool_is_list("tls+tcp://kiln.build.svc:7403"));
    KT_EXPECT(cli_pool_is_list("tcp://127.0.0.1:1,tcp://127.0.0.1:2"));
    kiln_error *err = NULL;
    KT_EXPECT_INT(cli_pool_check("tcp://127.0.0.1:1, tls+tcp://10.0.0.2:7403 ,ipc:///x.sock", &err),
                  0);
    KT_EXPECT_INT(cli_pool_check("tcp://127.0.0.1:1,http://x:1", &err), KILN_EINVAL);
    KT_EXPECT(err && strstr(err->msg, "pool endpoint 2") != NULL);
    kiln_error_free(&err);
    KT_EXPECT_INT(cli_pool_check("tcp://127.0.0.1:1,", &err), KILN_EINVAL);
    kiln_error_free(&err);
}
