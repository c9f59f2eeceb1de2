/*
 * fleet_boundary.h -- the decnet_fleet_* part of boundary.c (included by
 * it, after its harness): NULL in every pointer argument (and the NULLs
 * documented as allowed), invalid UTF-8, malformed JSON and out-of-range
 * enums, the error paths of plans and options, and one successful call.
 * The callback-driven sweep over many stand-ins is tests/c/fleet.c.
 */
#ifndef DECNET_TESTS_FLEET_BOUNDARY_H
#define DECNET_TESTS_FLEET_BOUNDARY_H

/* A well-formed pin: records must carry one (pinning fails closed). */
#define PIN64 "abababababababababababababababababababababababababababababababab"

static int fleet_boundary_callback(const char *host_result_json, void *user_data) {
    int *calls = user_data;
    if (calls != NULL) {
        (*calls)++;
    }
    CHECK(host_result_json != NULL && strstr(host_result_json, "\"index\":0") != NULL,
          "fleet callback: gets the host's result");
    return 0;
}

static void test_fleet_boundary(const decnet_identity *identity) {
    decnet_result rc;
    char hosts[4096];
    snprintf(hosts, sizeof hosts, "[%s]", g_host_ok);

    decnet_fleet *fleet = SENTINEL;
    EXPECT_NULL("decnet_fleet_new", "identity", decnet_fleet_new(NULL, hosts, DECNET_HOSTNAME_ON, &fleet),
                fleet == NULL);
    fleet = SENTINEL;
    EXPECT_NULL("decnet_fleet_new", "hosts_json", decnet_fleet_new(identity, NULL, DECNET_HOSTNAME_ON, &fleet),
                fleet == NULL);
    EXPECT_NULL("decnet_fleet_new", "out", decnet_fleet_new(identity, hosts, DECNET_HOSTNAME_ON, NULL), true);
    fleet = SENTINEL;
    EXPECT_UTF8("decnet_fleet_new", "hosts_json", decnet_fleet_new(identity, BAD_UTF8, DECNET_HOSTNAME_ON, &fleet),
                fleet == NULL);
    fleet = SENTINEL;
    EXPECT_BAD_JSON("decnet_fleet_new", "hosts_json", "hosts_json",
                    decnet_fleet_new(identity, "[{", DECNET_HOSTNAME_ON, &fleet), fleet == NULL);
    fleet = SENTINEL;
    cover("range", "decnet_fleet_new", "hostname_verification");
    rc = decnet_fleet_new(identity, hosts, 9, &fleet);
    expect_error("decnet_fleet_new(hostname_verification=9)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "hostname_verification");
    CHECK(fleet == NULL, "decnet_fleet_new(hostname_verification=9): out left NULL");
    fleet = SENTINEL;
    rc = decnet_fleet_new(identity, "{}", DECNET_HOSTNAME_ON, &fleet);
    expect_error("decnet_fleet_new(hosts_json={})", rc, DECNET_ERR_INVALID_ARGUMENT, "hosts_json");
    fleet = SENTINEL;
    rc = decnet_fleet_new(identity,
                          "[{\"address\":\"127.0.0.1\",\"uuid\":\"a\",\"client_cert_fingerprint\":\"" PIN64 "\"},"
                          "{\"address\":\"127.0.0.1\",\"uuid\":\"a\",\"client_cert_fingerprint\":\"" PIN64 "\"}]",
                          DECNET_HOSTNAME_ON, &fleet);
    expect_error("decnet_fleet_new(duplicate uuid)", rc, DECNET_ERR_INVALID_ARGUMENT, "hosts[1].uuid");
    CHECK(message_has("hosts[0]"), "duplicate uuid: the message names the first index too");
    CHECK(fleet == NULL, "duplicate uuid: out left NULL");

    decnet_fleet_free(NULL);
    cover("null", "decnet_fleet_free", "fleet");

    cover("call", "decnet_fleet_new", NULL);
    fleet = NULL;
    rc = decnet_fleet_new(identity, hosts, DECNET_HOSTNAME_ON, &fleet);
    expect_ok("decnet_fleet_new([ok.json])", rc);
    if (rc != DECNET_OK) {
        return;
    }

    cover("call", "decnet_fleet_size", NULL);
    size_t size = 0;
    rc = decnet_fleet_size(fleet, &size);
    CHECK(rc == DECNET_OK && size == 1, "decnet_fleet_size: 1 host");
    EXPECT_NULL("decnet_fleet_size", "fleet", decnet_fleet_size(NULL, &size), true);
    EXPECT_NULL("decnet_fleet_size", "out", decnet_fleet_size(fleet, NULL), true);

    cover("call", "decnet_fleet_set_timeouts", NULL);
    decnet_timeouts t = {.connect_ms = 3000, .read_ms = 3000, .write_ms = 3000, .pool_ms = 1000};
    expect_ok("decnet_fleet_set_timeouts", decnet_fleet_set_timeouts(fleet, DECNET_PROFILE_CONTROL, &t));
    EXPECT_NULL("decnet_fleet_set_timeouts", "fleet", decnet_fleet_set_timeouts(NULL, DECNET_PROFILE_CONTROL, &t),
                true);
    EXPECT_NULL("decnet_fleet_set_timeouts", "timeouts",
                decnet_fleet_set_timeouts(fleet, DECNET_PROFILE_CONTROL, NULL), true);
    cover("range", "decnet_fleet_set_timeouts", "profile");
    rc = decnet_fleet_set_timeouts(fleet, 4, &t);
    expect_error("decnet_fleet_set_timeouts(profile=4)", rc, DECNET_ERR_INVALID_ARGUMENT, "profile");
    decnet_timeouts zero = t;
    zero.read_ms = 0;
    rc = decnet_fleet_set_timeouts(fleet, DECNET_PROFILE_CONTROL, &zero);
    expect_error("decnet_fleet_set_timeouts(read_ms=0)", rc, DECNET_ERR_INVALID_ARGUMENT, "read");

    cover("call", "decnet_fleet_set_concurrency", NULL);
    expect_ok("decnet_fleet_set_concurrency(8)", decnet_fleet_set_concurrency(fleet, 8));
    rc = decnet_fleet_set_concurrency(fleet, 0);
    expect_error("decnet_fleet_set_concurrency(0)", rc, DECNET_ERR_INVALID_ARGUMENT, "concurrency");
    EXPECT_NULL("decnet_fleet_set_concurrency", "fleet", decnet_fleet_set_concurrency(NULL, 8), true);

    cover("call", "decnet_fleet_set_sweep_niceness", NULL);
    expect_ok("decnet_fleet_set_sweep_niceness(19)", decnet_fleet_set_sweep_niceness(fleet, 19));
    expect_ok("decnet_fleet_set_sweep_niceness(0)", decnet_fleet_set_sweep_niceness(fleet, 0));
    cover("range", "decnet_fleet_set_sweep_niceness", "increment");
    rc = decnet_fleet_set_sweep_niceness(fleet, 20);
    expect_error("decnet_fleet_set_sweep_niceness(20)", rc, DECNET_ERR_INVALID_ARGUMENT, "niceness");
    rc = decnet_fleet_set_sweep_niceness(fleet, 4294967295u);
    expect_error("decnet_fleet_set_sweep_niceness(UINT32_MAX)", rc, DECNET_ERR_INVALID_ARGUMENT, "niceness");
    EXPECT_NULL("decnet_fleet_set_sweep_niceness", "fleet", decnet_fleet_set_sweep_niceness(NULL, 10), true);

    cover("call", "decnet_fleet_set_session_resumption", NULL);
    expect_ok("decnet_fleet_set_session_resumption(false)", decnet_fleet_set_session_resumption(fleet, false));
    expect_ok("decnet_fleet_set_session_resumption(true)", decnet_fleet_set_session_resumption(fleet, true));
    EXPECT_NULL("decnet_fleet_set_session_resumption", "fleet", decnet_fleet_set_session_resumption(NULL, true),
                true);

    cover("call", "decnet_fleet_handshake_counts", NULL);
    decnet_handshake_counts counts = {3, 3};
    EXPECT_NULL("decnet_fleet_handshake_counts", "fleet", decnet_fleet_handshake_counts(NULL, &counts),
                counts.full == 0 && counts.resumed == 0);
    EXPECT_NULL("decnet_fleet_handshake_counts", "out", decnet_fleet_handshake_counts(fleet, NULL), true);
    expect_ok("decnet_fleet_handshake_counts", decnet_fleet_handshake_counts(fleet, &counts));

    cover("call", "decnet_fleet_set_max_open_connections", NULL);
    expect_ok("decnet_fleet_set_max_open_connections(100)", decnet_fleet_set_max_open_connections(fleet, 100));
    rc = decnet_fleet_set_max_open_connections(fleet, 0);
    expect_error("decnet_fleet_set_max_open_connections(0)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "max_open_connections");
    EXPECT_NULL("decnet_fleet_set_max_open_connections", "fleet", decnet_fleet_set_max_open_connections(NULL, 1),
                true);

    cover("call", "decnet_fleet_connection_budget", NULL);
    decnet_connection_budget budget = {7, 7, 7};
    EXPECT_NULL("decnet_fleet_connection_budget", "fleet", decnet_fleet_connection_budget(NULL, &budget),
                budget.max_open_connections == 0 && budget.open_connections == 0 && budget.evictions == 0);
    EXPECT_NULL("decnet_fleet_connection_budget", "out", decnet_fleet_connection_budget(fleet, NULL), true);
    expect_ok("decnet_fleet_connection_budget", decnet_fleet_connection_budget(fleet, &budget));
    CHECK(budget.max_open_connections == 100, "decnet_fleet_connection_budget reads the cap just set");

    cover("call", "decnet_fleet_set_deadline_ms", NULL);
    expect_ok("decnet_fleet_set_deadline_ms(60000)", decnet_fleet_set_deadline_ms(fleet, 60000));
    expect_ok("decnet_fleet_set_deadline_ms(0) clears it", decnet_fleet_set_deadline_ms(fleet, 0));
    EXPECT_NULL("decnet_fleet_set_deadline_ms", "fleet", decnet_fleet_set_deadline_ms(NULL, 1), true);

    cover("call", "decnet_fleet_call", NULL);
    char *out = NULL;
    int calls = 0;
    decnet_sweep_options options = {.concurrency = 2, .deadline_ms = 30000};
    rc = decnet_fleet_call(fleet, "health", NULL, &options, fleet_boundary_callback, &calls, &out);
    expect_null_allowed("decnet_fleet_call", "plan_json", rc);
    CHECK(calls == 1, "decnet_fleet_call: one callback for one host");
    CHECK(out != NULL && strstr(out, "\"outcome\":\"ok\"") != NULL && strstr(out, "\"status\":\"ok\"") != NULL,
          "decnet_fleet_call(health): the host answered");
    decnet_string_free(out);
    out = NULL;
    rc = decnet_fleet_call(fleet, "status", "[\"uuid-ok\"]", NULL, NULL, NULL, &out);
    expect_null_allowed("decnet_fleet_call", "options", rc);
    cover("null", "decnet_fleet_call", "user_data");
    CHECK(out != NULL && strstr(out, "\"deployed\"") != NULL, "decnet_fleet_call(status, [uuid]): answered");
    decnet_string_free(out);

    out = SENTINEL;
    EXPECT_NULL("decnet_fleet_call", "fleet", decnet_fleet_call(NULL, "health", NULL, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_fleet_call", "rpc", decnet_fleet_call(fleet, NULL, NULL, NULL, NULL, NULL, &out),
                out == NULL);
    EXPECT_NULL("decnet_fleet_call", "out_results_json",
                decnet_fleet_call(fleet, "health", NULL, NULL, NULL, NULL, NULL), true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_fleet_call", "rpc", decnet_fleet_call(fleet, BAD_UTF8, NULL, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_UTF8("decnet_fleet_call", "plan_json",
                decnet_fleet_call(fleet, "health", BAD_UTF8, NULL, NULL, NULL, &out), out == NULL);
    out = SENTINEL;
    EXPECT_BAD_JSON("decnet_fleet_call", "plan_json", "plan_json",
                    decnet_fleet_call(fleet, "health", "[0,", NULL, NULL, NULL, &out), out == NULL);
    out = SENTINEL;
    rc = decnet_fleet_call(fleet, "reboot", NULL, NULL, NULL, NULL, &out);
    expect_error("decnet_fleet_call(rpc=reboot)", rc, DECNET_ERR_INVALID_ARGUMENT, "rpc");
    CHECK(out == NULL, "unknown rpc: out left NULL");
    rc = decnet_fleet_call(fleet, "health", "[0, \"uuid-ok\"]", NULL, NULL, NULL, &out);
    expect_error("decnet_fleet_call(the same host twice)", rc, DECNET_ERR_INVALID_ARGUMENT, "plan[1].host");
    rc = decnet_fleet_call(fleet, "health", "[3]", NULL, NULL, NULL, &out);
    expect_error("decnet_fleet_call(index out of range)", rc, DECNET_ERR_INVALID_ARGUMENT, "plan[0].host");
    rc = decnet_fleet_call(fleet, "deploy", NULL, NULL, NULL, NULL, &out);
    expect_error("decnet_fleet_call(deploy without a plan)", rc, DECNET_ERR_INVALID_ARGUMENT, "config");
    decnet_sweep_options too_many = {.concurrency = 5000, .deadline_ms = 0};
    rc = decnet_fleet_call(fleet, "health", NULL, &too_many, NULL, NULL, &out);
    expect_error("decnet_fleet_call(concurrency=5000)", rc, DECNET_ERR_INVALID_ARGUMENT, "concurrency");
    CHECK(out == NULL, "bad options: out left NULL");

    cover("call", "decnet_fleet_free", NULL);
    decnet_fleet_free(fleet);
}

#endif
