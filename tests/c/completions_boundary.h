/*
 * completions_boundary.h -- the decnet_completions_* part of boundary.c
 * (included by it, after its harness): NULL in every pointer argument,
 * invalid UTF-8, malformed JSON and bad arguments of submit; then real
 * calls completed through the descriptor, watched with poll(2) as an
 * event loop would: each tag once, the answer and the error detail in the
 * completion's JSON, the descriptor quiet once all are popped, a tag in
 * use refused, a withdrawn call never completing, and a client freed (on
 * the queue's threads) while its call runs.
 */
#ifndef DECNET_TESTS_COMPLETIONS_BOUNDARY_H
#define DECNET_TESTS_COMPLETIONS_BOUNDARY_H

#include <poll.h>

/* Whether `fd` is readable within `timeout_ms`. */
static bool fd_readable(int fd, int timeout_ms) {
    struct pollfd watched = {.fd = fd, .events = POLLIN};
    return poll(&watched, 1, timeout_ms) == 1 && (watched.revents & POLLIN) != 0;
}

/* Pops completions as the descriptor reports them until `count` came (or
 * 30 s passed); each JSON text goes to `texts[tag]` (tags below `size`),
 * owned by the caller. Returns how many came. */
static int collect_completions(const decnet_completions *queue, int fd, int count, char **texts,
                               size_t size) {
    int came = 0;
    for (int waited = 0; came < count && waited < 300; waited++) {
        if (!fd_readable(fd, 100)) {
            continue;
        }
        for (;;) {
            uint64_t tag = 99;
            char *json = SENTINEL;
            decnet_result rc = decnet_completions_pop(queue, &tag, &json);
            expect_ok("decnet_completions_pop", rc);
            if (rc != DECNET_OK || json == NULL) {
                CHECK(rc != DECNET_OK || tag == 0, "decnet_completions_pop: none waiting gives tag 0");
                break;
            }
            came++;
            if (tag < size && texts[tag] == NULL) {
                texts[tag] = json;
            } else {
                CHECK(false, fmt("decnet_completions_pop: unexpected or repeated tag %llu",
                                 (unsigned long long)tag));
                decnet_string_free(json);
            }
        }
    }
    return came;
}

static void test_completions_arguments(decnet_completions *queue, decnet_client *client) {
    decnet_result rc;
    cover("call", "decnet_client_submit", NULL);
    EXPECT_NULL("decnet_client_submit", "client", decnet_client_submit(NULL, queue, "health", NULL, 1), true);
    EXPECT_NULL("decnet_client_submit", "completions", decnet_client_submit(client, NULL, "health", NULL, 1),
                true);
    EXPECT_NULL("decnet_client_submit", "rpc", decnet_client_submit(client, queue, NULL, NULL, 1), true);
    EXPECT_UTF8("decnet_client_submit", "rpc", decnet_client_submit(client, queue, BAD_UTF8, NULL, 1), true);
    EXPECT_UTF8("decnet_client_submit", "args_json", decnet_client_submit(client, queue, "health", BAD_UTF8, 1),
                true);
    EXPECT_BAD_JSON("decnet_client_submit", "args_json", "args_json",
                    decnet_client_submit(client, queue, "teardown", "{\"decky_id\":", 1), true);
    expect_null_allowed("decnet_client_submit", "args_json", DECNET_OK);
    rc = decnet_client_submit(client, queue, "reboot", NULL, 1);
    expect_error("decnet_client_submit(rpc=reboot)", rc, DECNET_ERR_INVALID_ARGUMENT, "rpc");
    rc = decnet_client_submit(client, queue, "mutate", "{\"decky_id\":\"d1\"}", 1);
    expect_error("decnet_client_submit(mutate without services)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "args_json.services");
    rc = decnet_client_submit(client, queue, "deploy", "[1]", 1);
    expect_error("decnet_client_submit(args_json=[1])", rc, DECNET_ERR_INVALID_ARGUMENT, "args_json");
    rc = decnet_client_submit(client, queue, "connect", "{}", 1);
    expect_error("decnet_client_submit(connect with arguments)", rc, DECNET_ERR_INVALID_ARGUMENT, "args_json");

    cover("call", "decnet_completions_fd", NULL);
    int fd = 7;
    EXPECT_NULL("decnet_completions_fd", "completions", decnet_completions_fd(NULL, &fd), fd == -1);
    EXPECT_NULL("decnet_completions_fd", "out_fd", decnet_completions_fd(queue, NULL), true);

    cover("call", "decnet_completions_withdraw", NULL);
    bool withdrawn = true;
    EXPECT_NULL("decnet_completions_withdraw", "completions", decnet_completions_withdraw(NULL, 1, &withdrawn),
                withdrawn == false);
    EXPECT_NULL("decnet_completions_withdraw", "out_withdrawn", decnet_completions_withdraw(queue, 1, NULL),
                true);

    cover("call", "decnet_completions_pop", NULL);
    uint64_t tag = 5;
    char *json = SENTINEL;
    EXPECT_NULL("decnet_completions_pop", "completions", decnet_completions_pop(NULL, &tag, &json),
                tag == 0 && json == NULL);
    json = SENTINEL;
    EXPECT_NULL("decnet_completions_pop", "out_tag", decnet_completions_pop(queue, NULL, &json), true);
    tag = 5;
    EXPECT_NULL("decnet_completions_pop", "out_json", decnet_completions_pop(queue, &tag, NULL), tag == 0);
}

/* decnet_fleet_submit: the argument checks, then a real sweep of one host
 * through the queue: its step, then its own completion with every
 * host's result. */
static void test_fleet_submit(const decnet_identity *identity, decnet_completions *queue, int fd) {
    decnet_fleet *fleet = fleet_of_ok_host(identity, "decnet_fleet_submit");
    if (fleet == NULL) {
        return;
    }
    decnet_result rc;
    cover("call", "decnet_fleet_submit", NULL);
    EXPECT_NULL("decnet_fleet_submit", "fleet", decnet_fleet_submit(NULL, queue, "health", NULL, NULL, 1), true);
    EXPECT_NULL("decnet_fleet_submit", "completions", decnet_fleet_submit(fleet, NULL, "health", NULL, NULL, 1),
                true);
    EXPECT_NULL("decnet_fleet_submit", "rpc", decnet_fleet_submit(fleet, queue, NULL, NULL, NULL, 1), true);
    EXPECT_UTF8("decnet_fleet_submit", "rpc", decnet_fleet_submit(fleet, queue, BAD_UTF8, NULL, NULL, 1), true);
    EXPECT_UTF8("decnet_fleet_submit", "plan_json", decnet_fleet_submit(fleet, queue, "health", BAD_UTF8, NULL, 1),
                true);
    EXPECT_BAD_JSON("decnet_fleet_submit", "plan_json", "plan_json",
                    decnet_fleet_submit(fleet, queue, "health", "[0,", NULL, 1), true);
    rc = decnet_fleet_submit(fleet, queue, "health", "[5]", NULL, 1);
    expect_error("decnet_fleet_submit(an unknown host)", rc, DECNET_ERR_INVALID_ARGUMENT, "plan[0].host");
    cover("null", "decnet_fleet_submit", "options");
    expect_null_allowed("decnet_fleet_submit", "plan_json",
                        decnet_fleet_submit(fleet, queue, "health", NULL, NULL, 1));
    decnet_sweep_options options = {1, 10000};
    expect_ok("decnet_fleet_submit(status, [0], options)",
              decnet_fleet_submit(fleet, queue, "status", "[0]", &options, 2));
    /* The fleet may go while its sweeps run. */
    decnet_fleet_free(fleet);
    char *texts[8] = {NULL};
    /* Tags 1 and 2 each post one step, then their own completion: the step
     * lands in texts[tag], the last one is counted here. */
    int steps = 0, ends = 0;
    for (int waited = 0; (steps < 2 || ends < 2) && waited < 300; waited++) {
        if (!fd_readable(fd, 100)) {
            continue;
        }
        uint64_t tag = 0;
        char *json = NULL;
        while (decnet_completions_pop(queue, &tag, &json) == DECNET_OK && json != NULL) {
            bool step = strstr(json, "\"outcome\":\"progress\"") != NULL;
            if (step) {
                steps++;
                CHECK(tag < 8 && texts[tag] == NULL, "one step per tag");
                if (tag < 8 && texts[tag] == NULL) {
                    texts[tag] = json;
                    json = NULL;
                }
            } else {
                ends++;
                CHECK(strstr(json, "\"outcome\":\"ok\"") && strstr(json, "\"result\":[{"),
                      fmt("a sweep ends with every host's result: %s", json));
            }
            decnet_string_free(json);
        }
    }
    CHECK(steps == 2 && ends == 2, fmt("2 steps and 2 ends came (got %d, %d)", steps, ends));
    CHECK(texts[1] && strstr(texts[1], "\"index\":0") && strstr(texts[1], "\"status\":\"ok\""),
          fmt("the health step is the host's result: %s", texts[1] ? texts[1] : "(none)"));
    CHECK(texts[2] && strstr(texts[2], "\"deployed\""),
          fmt("the status step holds the worker's answer: %s", texts[2] ? texts[2] : "(none)"));
    for (size_t i = 0; i < 8; i++) {
        decnet_string_free(texts[i]);
    }
}

static void test_completions_boundary(const decnet_identity *identity) {
    decnet_result rc;
    cover("call", "decnet_completions_new", NULL);
    EXPECT_NULL("decnet_completions_new", "out", decnet_completions_new(4, 0, NULL), true);
    decnet_completions *queue = SENTINEL;
    rc = decnet_completions_new(0, 0, &queue);
    expect_error("decnet_completions_new(max_threads=0)", rc, DECNET_ERR_INVALID_ARGUMENT, "max_threads");
    CHECK(queue == NULL, "decnet_completions_new(0): out left NULL");
    rc = decnet_completions_new(1025, 0, &queue);
    expect_error("decnet_completions_new(max_threads=1025)", rc, DECNET_ERR_INVALID_ARGUMENT, "max_threads");
    rc = decnet_completions_new(4, 20, &queue);
    expect_error("decnet_completions_new(niceness=20)", rc, DECNET_ERR_INVALID_ARGUMENT, "niceness");
    cover("call", "decnet_completions_free", NULL);
    cover("null", "decnet_completions_free", "completions");
    decnet_completions_free(NULL);
    cover("null", "decnet_completions_free_client", "client");
    decnet_completions_free_client(NULL, NULL);

    rc = decnet_completions_new(4, 5, &queue);
    expect_ok("decnet_completions_new(4, 5)", rc);
    decnet_client *client = NULL;
    decnet_client *bad = NULL;
    if (rc != DECNET_OK) {
        return;
    }
    rc = decnet_client_new_from_host_json(identity, g_host_ok, DECNET_HOSTNAME_ON, &client);
    expect_ok("client for the completions", rc);
    rc = decnet_client_new_from_host_json(identity, g_host_nonjson, DECNET_HOSTNAME_ON, &bad);
    expect_ok("client for the non-JSON worker", rc);
    if (client == NULL || bad == NULL) {
        decnet_client_free(client);
        decnet_client_free(bad);
        decnet_completions_free(queue);
        return;
    }
    test_completions_arguments(queue, client);

    int fd = -1;
    expect_ok("decnet_completions_fd", decnet_completions_fd(queue, &fd));
    CHECK(fd >= 0 && !fd_readable(fd, 0), "the descriptor is quiet before any call");
    /* Argument errors queued nothing: none of them completes below. */
    char *texts[8] = {NULL};
    expect_ok("submit connect", decnet_client_submit(client, queue, "connect", NULL, 1));
    expect_ok("submit health", decnet_client_submit(client, queue, "health", NULL, 2));
    expect_ok("submit teardown", decnet_client_submit(client, queue, "teardown", "{\"decky_id\":null}", 3));
    expect_ok("submit health to the non-JSON worker", decnet_client_submit(bad, queue, "health", NULL, 4));
    rc = decnet_client_submit(client, queue, "health", NULL, 2);
    expect_error("decnet_client_submit(a tag in use)", rc, DECNET_ERR_INVALID_ARGUMENT, "tag");
    /* The client may go while its calls run; its connections close on the
     * queue's threads. */
    cover("call", "decnet_completions_free_client", NULL);
    decnet_completions_free_client(queue, bad);
    int came = collect_completions(queue, fd, 4, texts, 8);
    CHECK(came == 4, fmt("4 completions came (got %d)", came));
    CHECK(!fd_readable(fd, 0), "the descriptor is quiet once all are popped");
    uint64_t tag = 9;
    char *json = SENTINEL;
    expect_ok("decnet_completions_pop (none waiting)", decnet_completions_pop(queue, &tag, &json));
    CHECK(json == NULL && tag == 0, "decnet_completions_pop: NULL and tag 0 when none waits");
    CHECK(texts[1] && strstr(texts[1], "\"outcome\":\"ok\"") && strstr(texts[1], "\"result\":null"),
          fmt("connect completes with a null result: %s", texts[1] ? texts[1] : "(none)"));
    CHECK(texts[2] && strstr(texts[2], "\"result\":{\"status\":\"ok\"}") && strstr(texts[2], "\"tag\":2"),
          fmt("health completes with the answer: %s", texts[2] ? texts[2] : "(none)"));
    CHECK(texts[3] && strstr(texts[3], "\"outcome\":\"ok\""),
          fmt("teardown completes: %s", texts[3] ? texts[3] : "(none)"));
    CHECK(texts[4] && strstr(texts[4], "\"outcome\":\"error\"") && strstr(texts[4], "\"kind\":\"protocol\""),
          fmt("a non-JSON answer completes as a protocol error: %s", texts[4] ? texts[4] : "(none)"));
    for (size_t i = 0; i < 8; i++) {
        decnet_string_free(texts[i]);
        texts[i] = NULL;
    }
    test_fleet_submit(identity, queue, fd);

    /* A full queue of one thread: the second call can be withdrawn. */
    decnet_completions *single = NULL;
    expect_ok("decnet_completions_new(1, 0)", decnet_completions_new(1, 0, &single));
    if (single != NULL) {
        int single_fd = -1;
        expect_ok("decnet_completions_fd(single)", decnet_completions_fd(single, &single_fd));
        for (uint64_t t = 1; t <= 6; t++) {
            expect_ok("submit health (single)", decnet_client_submit(client, single, "health", NULL, t));
        }
        bool withdrawn = false;
        expect_ok("decnet_completions_withdraw(6)", decnet_completions_withdraw(single, 6, &withdrawn));
        bool again = true;
        expect_ok("decnet_completions_withdraw(6) again", decnet_completions_withdraw(single, 6, &again));
        CHECK(!again, "a call is withdrawn at most once");
        int expected = withdrawn ? 5 : 6;
        came = collect_completions(single, single_fd, expected, texts, 8);
        CHECK(came == expected, fmt("%d completions came (got %d)", expected, came));
        CHECK(!withdrawn || texts[6] == NULL, "a withdrawn call does not complete");
        for (size_t i = 0; i < 8; i++) {
            decnet_string_free(texts[i]);
            texts[i] = NULL;
        }
        /* Freed with calls queued and one running: nothing leaks, no crash. */
        for (uint64_t t = 1; t <= 3; t++) {
            expect_ok("submit before free", decnet_client_submit(client, single, "status", NULL, t));
        }
        decnet_completions_free(single);
    }
    /* Without a queue, the client is freed on the calling thread. */
    cover("null", "decnet_completions_free_client", "completions");
    decnet_completions_free_client(NULL, client);
    decnet_completions_free(queue);
}

#endif
