/*
 * updater_fleet_boundary.h -- the decnet_updater_fleet_* and
 * decnet_fleet_deploy_sharded part of boundary.c (included by it, after
 * boundary_updater.h and fleet_boundary.h, whose helpers it uses): NULL in
 * every pointer argument (and the NULLs documented as allowed), invalid
 * UTF-8, malformed JSON and out-of-range enums, the error paths of
 * policies and digests, and one successful call of each. The rollouts'
 * outcomes over several updaters are tests/c/updater_fleet.c.
 */
#ifndef DECNET_TESTS_UPDATER_FLEET_BOUNDARY_H
#define DECNET_TESTS_UPDATER_FLEET_BOUNDARY_H

static int updater_fleet_boundary_callback(const char *result_json, void *user_data) {
    int *calls = user_data;
    if (calls != NULL) {
        (*calls)++;
    }
    CHECK(result_json != NULL && strstr(result_json, "\"index\":") != NULL &&
              strstr(result_json, "\"address\":") != NULL,
          "updater fleet callback: gets the host's object");
    return 0;
}

static void test_updater_fleet_new(const decnet_identity *identity, const char *hosts) {
    decnet_updater_fleet *fleet = SENTINEL;
    const char *f = "decnet_updater_fleet_new_from_json";
    EXPECT_NULL(f, "identity", decnet_updater_fleet_new_from_json(NULL, hosts, DECNET_HOSTNAME_ON, &fleet),
                fleet == NULL);
    fleet = SENTINEL;
    EXPECT_NULL(f, "hosts_json", decnet_updater_fleet_new_from_json(identity, NULL, DECNET_HOSTNAME_ON, &fleet),
                fleet == NULL);
    EXPECT_NULL(f, "out", decnet_updater_fleet_new_from_json(identity, hosts, DECNET_HOSTNAME_ON, NULL), true);
    fleet = SENTINEL;
    EXPECT_UTF8(f, "hosts_json", decnet_updater_fleet_new_from_json(identity, BAD_UTF8, DECNET_HOSTNAME_ON, &fleet),
                fleet == NULL);
    fleet = SENTINEL;
    EXPECT_BAD_JSON(f, "hosts_json", "hosts_json",
                    decnet_updater_fleet_new_from_json(identity, "[{", DECNET_HOSTNAME_ON, &fleet), fleet == NULL);
    fleet = SENTINEL;
    cover("range", f, "hostname_verification");
    decnet_result rc = decnet_updater_fleet_new_from_json(identity, hosts, 9, &fleet);
    expect_error("decnet_updater_fleet_new_from_json(hostname_verification=9)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "hostname_verification");
    CHECK(fleet == NULL, "hostname_verification=9: out left NULL");
    fleet = SENTINEL;
    rc = decnet_updater_fleet_new_from_json(
        identity, "[{\"address\":\"127.0.0.1\",\"updater_cert_fingerprint\":\"nothex\"}]", DECNET_HOSTNAME_ON,
        &fleet);
    expect_error("decnet_updater_fleet_new_from_json(bad pin)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "hosts[0].updater_cert_fingerprint");
    CHECK(fleet == NULL, "bad pin: out left NULL");
    decnet_updater_fleet_free(NULL);
    cover("null", "decnet_updater_fleet_free", "fleet");
}

static void test_updater_fleet_boundary(const decnet_identity *identity) {
    char hosts[4096];
    /* The ok updater, and a record with no updater pin (never contacted). */
    snprintf(hosts, sizeof hosts, "[%s,{\"uuid\":\"u-nopin\",\"address\":\"127.0.0.1\",\"updater_port\":1}]",
             g_updater_ok);
    test_updater_fleet_new(identity, hosts);

    cover("call", "decnet_updater_fleet_new_from_json", NULL);
    decnet_updater_fleet *fleet = NULL;
    decnet_result rc = decnet_updater_fleet_new_from_json(identity, hosts, DECNET_HOSTNAME_ON, &fleet);
    expect_ok("decnet_updater_fleet_new_from_json(ok, no pin)", rc);
    if (rc != DECNET_OK) {
        return;
    }

    cover("call", "decnet_updater_fleet_size", NULL);
    size_t size = 0;
    CHECK(decnet_updater_fleet_size(fleet, &size) == DECNET_OK && size == 2, "decnet_updater_fleet_size: 2");
    EXPECT_NULL("decnet_updater_fleet_size", "fleet", decnet_updater_fleet_size(NULL, &size), true);
    EXPECT_NULL("decnet_updater_fleet_size", "out", decnet_updater_fleet_size(fleet, NULL), true);

    cover("call", "decnet_updater_fleet_set_concurrency", NULL);
    expect_ok("decnet_updater_fleet_set_concurrency(4)", decnet_updater_fleet_set_concurrency(fleet, 4));
    rc = decnet_updater_fleet_set_concurrency(fleet, 0);
    expect_error("decnet_updater_fleet_set_concurrency(0)", rc, DECNET_ERR_INVALID_ARGUMENT, "concurrency");
    EXPECT_NULL("decnet_updater_fleet_set_concurrency", "fleet", decnet_updater_fleet_set_concurrency(NULL, 4),
                true);
    cover("call", "decnet_updater_fleet_set_deadline_ms", NULL);
    expect_ok("decnet_updater_fleet_set_deadline_ms(60000)", decnet_updater_fleet_set_deadline_ms(fleet, 60000));
    EXPECT_NULL("decnet_updater_fleet_set_deadline_ms", "fleet", decnet_updater_fleet_set_deadline_ms(NULL, 1),
                true);

    /* Plain sweeps. */
    const char *c = "decnet_updater_fleet_call";
    const char *tarball = path_in(g_tmp, "fleet-release.tgz");
    CHECK(write_file(tarball, "a release pushed by the updater fleet"), "write the fleet's tarball");
    cover("call", c, NULL);
    char *out = NULL;
    int calls = 0;
    decnet_sweep_options options = {.concurrency = 2, .deadline_ms = 30000};
    rc = decnet_updater_fleet_call(fleet, "health", NULL, NULL, &options, updater_fleet_boundary_callback, &calls,
                                   &out);
    expect_null_allowed(c, "tarball_path", rc);
    cover("null", c, "sha");
    CHECK(calls == 2, "decnet_updater_fleet_call(health): a callback per host");
    CHECK(out != NULL && strstr(out, "\"role\":\"updater\"") != NULL &&
              strstr(out, "\"kind\":\"pin_mismatch\"") != NULL,
          "health: the ok updater answers, the unpinned host is a pin mismatch");
    decnet_string_free(out);
    out = NULL;
    rc = decnet_updater_fleet_call(fleet, "update", tarball, "fc1", NULL, NULL, NULL, &out);
    expect_null_allowed(c, "options", rc);
    cover("null", c, "user_data");
    CHECK(out != NULL && strstr(out, "\"sha\":\"fc1\"") != NULL, "update sweep: the ok updater installs fc1");
    decnet_string_free(out);
    out = SENTINEL;
    EXPECT_NULL(c, "fleet", decnet_updater_fleet_call(NULL, "health", NULL, NULL, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL(c, "rpc", decnet_updater_fleet_call(fleet, NULL, NULL, NULL, NULL, NULL, NULL, &out), out == NULL);
    EXPECT_NULL(c, "out_results_json",
                decnet_updater_fleet_call(fleet, "health", NULL, NULL, NULL, NULL, NULL, NULL), true);
    out = SENTINEL;
    EXPECT_UTF8(c, "rpc", decnet_updater_fleet_call(fleet, BAD_UTF8, NULL, NULL, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_UTF8(c, "tarball_path",
                decnet_updater_fleet_call(fleet, "update", BAD_UTF8, "x", NULL, NULL, NULL, &out), out == NULL);
    out = SENTINEL;
    EXPECT_UTF8(c, "sha", decnet_updater_fleet_call(fleet, "update", tarball, BAD_UTF8, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    rc = decnet_updater_fleet_call(fleet, "update", NULL, "x", NULL, NULL, NULL, &out);
    expect_error("decnet_updater_fleet_call(update, no tarball)", rc, DECNET_ERR_NULL_ARGUMENT, "tarball_path");
    rc = decnet_updater_fleet_call(fleet, "health", tarball, "x", NULL, NULL, NULL, &out);
    expect_error("decnet_updater_fleet_call(health with a tarball)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "tarball_path");
    rc = decnet_updater_fleet_call(fleet, "reboot", NULL, NULL, NULL, NULL, NULL, &out);
    expect_error("decnet_updater_fleet_call(rpc=reboot)", rc, DECNET_ERR_INVALID_ARGUMENT, "rpc");
    rc = decnet_updater_fleet_call(fleet, "update", path_in(g_tmp, "no-such.tgz"), "x", NULL, NULL, NULL, &out);
    expect_error("decnet_updater_fleet_call(missing tarball)", rc, DECNET_ERR_IO, NULL);
    CHECK(out == NULL, "failed sweeps: out left NULL");

    /* Push. */
    const char *p = "decnet_updater_fleet_push";
    cover("call", p, NULL);
    calls = 0;
    out = NULL;
    rc = decnet_updater_fleet_push(fleet, tarball, "fp1", NULL, NULL, &options, updater_fleet_boundary_callback,
                                   &calls, &out);
    expect_null_allowed(p, "sha256", rc);
    cover("null", p, "policy_json");
    CHECK(calls == 2, "push: a callback per host");
    CHECK(out != NULL && strstr(out, "\"status\":\"updated\"") != NULL &&
              strstr(out, "\"status\":\"no-updater-pin\"") != NULL && strstr(out, "\"stop\":\"completed\"") != NULL,
          "push: the ok updater updated, the unpinned host reported, completed");
    decnet_string_free(out);
    out = NULL;
    rc = decnet_updater_fleet_push(fleet, tarball, "fp2", NULL, "{\"canary\": 1, \"batch\": \"50%\"}", NULL, NULL,
                                   NULL, &out);
    expect_null_allowed(p, "options", rc);
    cover("null", p, "user_data");
    CHECK(out != NULL && strstr(out, "\"wave\":\"canary\"") != NULL, "push with a policy: the canary");
    decnet_string_free(out);
    out = SENTINEL;
    EXPECT_NULL(p, "fleet", decnet_updater_fleet_push(NULL, tarball, "x", NULL, NULL, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL(p, "tarball_path", decnet_updater_fleet_push(fleet, NULL, "x", NULL, NULL, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL(p, "sha", decnet_updater_fleet_push(fleet, tarball, NULL, NULL, NULL, NULL, NULL, NULL, &out),
                out == NULL);
    EXPECT_NULL(p, "out_results_json",
                decnet_updater_fleet_push(fleet, tarball, "x", NULL, NULL, NULL, NULL, NULL, NULL), true);
    out = SENTINEL;
    EXPECT_UTF8(p, "tarball_path",
                decnet_updater_fleet_push(fleet, BAD_UTF8, "x", NULL, NULL, NULL, NULL, NULL, &out), out == NULL);
    out = SENTINEL;
    EXPECT_UTF8(p, "sha", decnet_updater_fleet_push(fleet, tarball, BAD_UTF8, NULL, NULL, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_UTF8(p, "sha256",
                decnet_updater_fleet_push(fleet, tarball, "x", BAD_UTF8, NULL, NULL, NULL, NULL, &out), out == NULL);
    out = SENTINEL;
    EXPECT_UTF8(p, "policy_json",
                decnet_updater_fleet_push(fleet, tarball, "x", NULL, BAD_UTF8, NULL, NULL, NULL, &out), out == NULL);
    out = SENTINEL;
    EXPECT_BAD_JSON(p, "policy_json", "policy_json",
                    decnet_updater_fleet_push(fleet, tarball, "x", NULL, "{\"canary\":", NULL, NULL, NULL, &out),
                    out == NULL);
    out = SENTINEL;
    rc = decnet_updater_fleet_push(fleet, tarball, "x", NULL, "{\"max_failure\": 5}", NULL, NULL, NULL, &out);
    expect_error("push(a misspelt policy member)", rc, DECNET_ERR_INVALID_ARGUMENT, "policy");
    CHECK(message_has("max_failure"), "the message names the unknown member");
    rc = decnet_updater_fleet_push(fleet, tarball, "x", "0000000000000000000000000000000000000000000000000000000000000000",
                                   NULL, NULL, NULL, NULL, &out);
    expect_error("push(a digest that is not the file's)", rc, DECNET_ERR_INVALID_ARGUMENT, "sha256");
    CHECK(out == NULL, "failed pushes: out left NULL");

    /* Rollback. */
    const char *r = "decnet_updater_fleet_rollback";
    cover("call", r, NULL);
    out = NULL;
    calls = 0;
    rc = decnet_updater_fleet_rollback(fleet, NULL, &options, updater_fleet_boundary_callback, &calls, &out);
    expect_null_allowed(r, "policy_json", rc);
    CHECK(out != NULL && strstr(out, "\"status\":\"rolled-back\"") != NULL, "rollback: the ok updater went back");
    decnet_string_free(out);
    out = NULL;
    rc = decnet_updater_fleet_rollback(fleet, "{\"canary\": 0}", NULL, NULL, NULL, &out);
    expect_null_allowed(r, "options", rc);
    cover("null", r, "user_data");
    CHECK(out != NULL && strstr(out, "\"http_status\":404") != NULL, "a second rollback: no previous release");
    decnet_string_free(out);
    out = SENTINEL;
    EXPECT_NULL(r, "fleet", decnet_updater_fleet_rollback(NULL, NULL, NULL, NULL, NULL, &out), out == NULL);
    EXPECT_NULL(r, "out_results_json", decnet_updater_fleet_rollback(fleet, NULL, NULL, NULL, NULL, NULL), true);
    out = SENTINEL;
    EXPECT_UTF8(r, "policy_json", decnet_updater_fleet_rollback(fleet, BAD_UTF8, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_BAD_JSON(r, "policy_json", "policy_json",
                    decnet_updater_fleet_rollback(fleet, "[", NULL, NULL, NULL, &out), out == NULL);
    out = SENTINEL;
    rc = decnet_updater_fleet_rollback(fleet, "{\"self_update\": true}", NULL, NULL, NULL, &out);
    expect_error("rollback(self_update)", rc, DECNET_ERR_INVALID_ARGUMENT, "self_update");
    CHECK(out == NULL, "failed rollbacks: out left NULL");

    cover("call", "decnet_updater_fleet_free", NULL);
    decnet_updater_fleet_free(fleet);
}

static void test_deploy_sharded_boundary(const decnet_identity *identity) {
    decnet_fleet *fleet = fleet_of_ok_host(identity, "the sharded deploy");
    if (fleet == NULL) {
        return;
    }
    decnet_result rc;
    const char *d = "decnet_fleet_deploy_sharded";
    const char *config = "{\"mode\":\"swarm\",\"deckies\":[{\"name\":\"d1\",\"services\":[\"ssh\"],"
                         "\"host_uuid\":\"uuid-ok\"}]}";
    cover("call", d, NULL);
    char *out = NULL;
    int calls = 0;
    decnet_sweep_options options = {.concurrency = 2, .deadline_ms = 30000};
    rc = decnet_fleet_deploy_sharded(fleet, config, true, &options, updater_fleet_boundary_callback, &calls, &out);
    expect_ok("decnet_fleet_deploy_sharded", rc);
    CHECK(calls == 1 && out != NULL && strstr(out, "\"outcome\":\"ok\"") != NULL &&
              strstr(out, "\"deckies\":[\"d1\"]") != NULL && strstr(out, "\"probe\":null") != NULL,
          "sharded deploy: the host got its decky, no probe after a success");
    decnet_string_free(out);
    out = NULL;
    rc = decnet_fleet_deploy_sharded(fleet, config, false, NULL, NULL, NULL, &out);
    expect_null_allowed(d, "options", rc);
    cover("null", d, "user_data");
    decnet_string_free(out);
    out = SENTINEL;
    EXPECT_NULL(d, "fleet", decnet_fleet_deploy_sharded(NULL, config, false, NULL, NULL, NULL, &out), out == NULL);
    out = SENTINEL;
    EXPECT_NULL(d, "config_json", decnet_fleet_deploy_sharded(fleet, NULL, false, NULL, NULL, NULL, &out),
                out == NULL);
    EXPECT_NULL(d, "out_results_json", decnet_fleet_deploy_sharded(fleet, config, false, NULL, NULL, NULL, NULL),
                true);
    out = SENTINEL;
    EXPECT_UTF8(d, "config_json", decnet_fleet_deploy_sharded(fleet, BAD_UTF8, false, NULL, NULL, NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_BAD_JSON(d, "config_json", "config_json",
                    decnet_fleet_deploy_sharded(fleet, "{\"deckies\":", false, NULL, NULL, NULL, &out), out == NULL);
    out = SENTINEL;
    rc = decnet_fleet_deploy_sharded(
        fleet, "{\"deckies\":[{\"name\":\"d1\",\"services\":[\"ssh\"],\"host_uuid\":\"uuid-elsewhere\"}]}", false,
        NULL, NULL, NULL, &out);
    expect_error("deploy_sharded(a decky naming an unknown host)", rc, DECNET_ERR_INVALID_ARGUMENT, "config_json");
    CHECK(out == NULL && message_has("uuid-elsewhere"), "unknown host: named, out left NULL");
    decnet_fleet_free(fleet);
}

#endif
