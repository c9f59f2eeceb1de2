/*
 * boundary_updater.h -- the updater and enrollment part of boundary.c,
 * included by it (it uses boundary.c's harness and helpers).
 *
 * Needs the stand-in updaters that examples/stand_in_worker writes beside
 * its host records: HOSTS_DIR/../updaters/{ok,probe,selfdrop}.json, each a
 * pinned host record carrying its port as `updater_port`.
 *
 * Covers every decnet_updater_* function and decnet_enroll: NULLs, invalid
 * UTF-8, malformed JSON, out-of-range enums; the fail-closed constructor;
 * every call against the `ok` updater; the 409 detail read through
 * decnet_last_error_update_error / _update_stderr / _rolled_back; the
 * update-self "connection closed" success and the health poll; enrollment
 * output (record fields, files, modes) and the re-issue rule.
 */

static char *g_updater_ok;
static char *g_updater_probe;
static char *g_updater_selfdrop;

static unsigned short updater_port(const char *record) {
    long port = json_number(record, "updater_port");
    return port > 0 && port <= 65535 ? (unsigned short)port : 0;
}

static decnet_updater *updater_for(const decnet_identity *identity, const char *record, const char *what) {
    decnet_updater *updater = NULL;
    decnet_result rc =
        decnet_updater_new_from_host_json(identity, record, updater_port(record), DECNET_HOSTNAME_ON, &updater);
    expect_ok(fmt("updater for %s", what), rc);
    return updater;
}

static bool load_updaters(const char *hosts_dir) {
    const char *dir = keepf("%s/../updaters", hosts_dir);
    g_updater_ok = read_file(path_in(dir, "ok.json"));
    g_updater_probe = read_file(path_in(dir, "probe.json"));
    g_updater_selfdrop = read_file(path_in(dir, "selfdrop.json"));
    bool ok = g_updater_ok && g_updater_probe && g_updater_selfdrop && updater_port(g_updater_ok) &&
              updater_port(g_updater_probe) && updater_port(g_updater_selfdrop);
    CHECK(ok, fmt("read the three updater records in %s", dir));
    return ok;
}

static void test_updater_new(const decnet_identity *identity) {
    decnet_result rc;
    decnet_updater *updater = NULL;
    unsigned short port = updater_port(g_updater_ok);
    char pin[65] = "";
    CHECK(json_string(g_updater_ok, "updater_cert_fingerprint", pin, sizeof pin) && is_hex64(pin),
          "ok updater record has a 64-hex updater pin");

    cover("call", "decnet_updater_new_from_host_json", NULL);
    rc = decnet_updater_new_from_host_json(identity, g_updater_ok, port, DECNET_HOSTNAME_ON, &updater);
    expect_ok("decnet_updater_new_from_host_json(ok)", rc);
    decnet_updater_free(updater);
    updater = SENTINEL;
    EXPECT_NULL("decnet_updater_new_from_host_json", "identity",
                decnet_updater_new_from_host_json(NULL, g_updater_ok, port, DECNET_HOSTNAME_ON, &updater),
                updater == NULL);
    updater = SENTINEL;
    EXPECT_NULL("decnet_updater_new_from_host_json", "host_json",
                decnet_updater_new_from_host_json(identity, NULL, port, DECNET_HOSTNAME_ON, &updater),
                updater == NULL);
    EXPECT_NULL("decnet_updater_new_from_host_json", "out",
                decnet_updater_new_from_host_json(identity, g_updater_ok, port, DECNET_HOSTNAME_ON, NULL), true);
    updater = SENTINEL;
    EXPECT_UTF8("decnet_updater_new_from_host_json", "host_json",
                decnet_updater_new_from_host_json(identity, BAD_UTF8, port, DECNET_HOSTNAME_ON, &updater),
                updater == NULL);
    updater = SENTINEL;
    EXPECT_BAD_JSON("decnet_updater_new_from_host_json", "host_json", "host_json",
                    decnet_updater_new_from_host_json(identity, "{\"address\":", port, DECNET_HOSTNAME_ON, &updater),
                    updater == NULL);
    updater = SENTINEL;
    cover("range", "decnet_updater_new_from_host_json", "hostname_verification");
    rc = decnet_updater_new_from_host_json(identity, g_updater_ok, port, 7, &updater);
    expect_error("decnet_updater_new_from_host_json(hostname_verification=7)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "hostname_verification");
    CHECK(updater == NULL, "updater hostname_verification=7: out left NULL");

    /* Fail closed: no updater pin recorded, refused before any connection. */
    updater = SENTINEL;
    rc = decnet_updater_new_from_host_json(
        identity, "{\"address\":\"127.0.0.1\",\"client_cert_fingerprint\":null,\"updater_cert_fingerprint\":null}",
        port, DECNET_HOSTNAME_ON, &updater);
    expect_error("updater record without updater_cert_fingerprint", rc, DECNET_ERR_PIN_MISMATCH, NULL);
    CHECK(message_has("no updater pin is recorded"), "fail-closed message says no updater pin is recorded");
    CHECK(updater == NULL, "fail-closed: out left NULL");
    CHECK(same(decnet_last_error_expected_fingerprint(), ""), "fail-closed: expected fingerprint is empty");

    cover("call", "decnet_updater_new", NULL);
    updater = NULL;
    rc = decnet_updater_new(identity, "127.0.0.1", port, pin, DECNET_HOSTNAME_ON, &updater);
    expect_ok("decnet_updater_new(address, port, pin)", rc);
    char *json = NULL;
    if (rc == DECNET_OK) {
        rc = decnet_updater_health(updater, &json);
        expect_ok("health through decnet_updater_new", rc);
        CHECK(contains(json, "\"role\":\"updater\""), "health says role updater");
        decnet_string_free(json);
    }
    decnet_updater_free(updater);
    updater = SENTINEL;
    EXPECT_NULL("decnet_updater_new", "identity",
                decnet_updater_new(NULL, "127.0.0.1", port, pin, DECNET_HOSTNAME_ON, &updater), updater == NULL);
    updater = SENTINEL;
    EXPECT_NULL("decnet_updater_new", "address",
                decnet_updater_new(identity, NULL, port, pin, DECNET_HOSTNAME_ON, &updater), updater == NULL);
    updater = SENTINEL;
    EXPECT_NULL("decnet_updater_new", "pin",
                decnet_updater_new(identity, "127.0.0.1", port, NULL, DECNET_HOSTNAME_ON, &updater),
                updater == NULL);
    EXPECT_NULL("decnet_updater_new", "out",
                decnet_updater_new(identity, "127.0.0.1", port, pin, DECNET_HOSTNAME_ON, NULL), true);
    updater = SENTINEL;
    EXPECT_UTF8("decnet_updater_new", "address",
                decnet_updater_new(identity, BAD_UTF8, port, pin, DECNET_HOSTNAME_ON, &updater), updater == NULL);
    updater = SENTINEL;
    EXPECT_UTF8("decnet_updater_new", "pin",
                decnet_updater_new(identity, "127.0.0.1", port, BAD_UTF8, DECNET_HOSTNAME_ON, &updater),
                updater == NULL);
    updater = SENTINEL;
    cover("range", "decnet_updater_new", "hostname_verification");
    rc = decnet_updater_new(identity, "127.0.0.1", port, pin, 9, &updater);
    expect_error("decnet_updater_new(hostname_verification=9)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "hostname_verification");
    updater = SENTINEL;
    rc = decnet_updater_new(identity, "127.0.0.1", port, "abc", DECNET_HOSTNAME_ON, &updater);
    expect_error("decnet_updater_new(short pin)", rc, DECNET_ERR_INVALID_ARGUMENT, "updater_cert_fingerprint");
    CHECK(updater == NULL, "short pin: out left NULL");

    cover("null", "decnet_updater_free", "updater");
    cover("call", "decnet_updater_free", NULL);
    decnet_updater_free(NULL);
}

static void test_updater_timeouts(const decnet_updater *updater) {
    decnet_result rc;
    decnet_timeouts t;
    cover("call", "decnet_updater_get_timeouts", NULL);
    cover("call", "decnet_updater_set_timeouts", NULL);
    static const uint64_t defaults[2][3] = {{5000, 30000, 10000}, {10000, 180000, 120000}};
    for (uint32_t p = 0; p < 2; p++) {
        rc = decnet_updater_get_timeouts(updater, p, &t);
        CHECK(rc == DECNET_OK && t.connect_ms == defaults[p][0] && t.read_ms == defaults[p][1] &&
                  t.write_ms == defaults[p][2],
              fmt("updater profile %u has the spec's timeouts", (unsigned)p));
    }
    decnet_timeouts want = {2000, 60000, 30000, 0};
    expect_ok("decnet_updater_set_timeouts(update)",
              decnet_updater_set_timeouts(updater, DECNET_UPDATER_PROFILE_UPDATE, &want));
    rc = decnet_updater_get_timeouts(updater, DECNET_UPDATER_PROFILE_UPDATE, &t);
    CHECK(rc == DECNET_OK && memcmp(&t, &want, sizeof t) == 0, "updater timeouts set/get round trip");
    EXPECT_NULL("decnet_updater_get_timeouts", "updater", decnet_updater_get_timeouts(NULL, 0, &t), true);
    EXPECT_NULL("decnet_updater_get_timeouts", "out", decnet_updater_get_timeouts(updater, 0, NULL), true);
    cover("range", "decnet_updater_get_timeouts", "profile");
    rc = decnet_updater_get_timeouts(updater, 2, &t);
    expect_error("decnet_updater_get_timeouts(profile 2)", rc, DECNET_ERR_INVALID_ARGUMENT, "profile");
    EXPECT_NULL("decnet_updater_set_timeouts", "updater", decnet_updater_set_timeouts(NULL, 0, &want), true);
    EXPECT_NULL("decnet_updater_set_timeouts", "timeouts", decnet_updater_set_timeouts(updater, 0, NULL), true);
    cover("range", "decnet_updater_set_timeouts", "profile");
    rc = decnet_updater_set_timeouts(updater, 2, &want);
    expect_error("decnet_updater_set_timeouts(profile 2)", rc, DECNET_ERR_INVALID_ARGUMENT, "profile");
    decnet_timeouts zero_write = {1000, 1000, 0, 0};
    rc = decnet_updater_set_timeouts(updater, DECNET_UPDATER_PROFILE_CONTROL, &zero_write);
    expect_error("decnet_updater_set_timeouts(write 0)", rc, DECNET_ERR_INVALID_ARGUMENT, "write");
}

static void test_updater_arguments(const decnet_updater *updater) {
    char *out = SENTINEL;
    bool closed = true;
    static const uint8_t data[] = "tarball";
    const char *missing = path_in(g_tmp, "no-such-tarball.tgz");

    EXPECT_NULL("decnet_updater_health", "updater", decnet_updater_health(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_updater_health", "out_json", decnet_updater_health(updater, NULL), true);
    out = SENTINEL;
    EXPECT_NULL("decnet_updater_releases", "updater", decnet_updater_releases(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_updater_releases", "out_json", decnet_updater_releases(updater, NULL), true);
    out = SENTINEL;
    EXPECT_NULL("decnet_updater_rollback", "updater", decnet_updater_rollback(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_updater_rollback", "out_json", decnet_updater_rollback(updater, NULL), true);

    out = SENTINEL;
    EXPECT_NULL("decnet_updater_update", "updater", decnet_updater_update(NULL, NULL, data, 7, "s", &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_updater_update", "tarball_data", decnet_updater_update(updater, NULL, NULL, 7, "s", &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_updater_update", "sha", decnet_updater_update(updater, NULL, data, 7, NULL, &out),
                out == NULL);
    EXPECT_NULL("decnet_updater_update", "out_json", decnet_updater_update(updater, NULL, data, 7, "s", NULL),
                true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_updater_update", "tarball_path",
                decnet_updater_update(updater, BAD_UTF8, NULL, 0, "s", &out), out == NULL);
    out = SENTINEL;
    EXPECT_UTF8("decnet_updater_update", "sha", decnet_updater_update(updater, NULL, data, 7, BAD_UTF8, &out),
                out == NULL);
    out = SENTINEL;
    decnet_result rc = decnet_updater_update(updater, missing, NULL, 0, "s", &out);
    expect_error("decnet_updater_update(missing file)", rc, DECNET_ERR_IO, NULL);
    CHECK(out == NULL, "missing tarball file: out left NULL");

    out = SENTINEL;
    EXPECT_NULL("decnet_updater_update_self", "updater",
                decnet_updater_update_self(NULL, NULL, data, 7, "s", &closed, &out), out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_updater_update_self", "tarball_data",
                decnet_updater_update_self(updater, NULL, NULL, 7, "s", &closed, &out), out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_updater_update_self", "sha",
                decnet_updater_update_self(updater, NULL, data, 7, NULL, &closed, &out), out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_updater_update_self", "out_connection_closed",
                decnet_updater_update_self(updater, NULL, data, 7, "s", NULL, &out), true);
    EXPECT_NULL("decnet_updater_update_self", "out_json",
                decnet_updater_update_self(updater, NULL, data, 7, "s", &closed, NULL), true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_updater_update_self", "tarball_path",
                decnet_updater_update_self(updater, BAD_UTF8, NULL, 0, "s", &closed, &out), out == NULL);
    out = SENTINEL;
    EXPECT_UTF8("decnet_updater_update_self", "sha",
                decnet_updater_update_self(updater, NULL, data, 7, BAD_UTF8, &closed, &out), out == NULL);

    out = SENTINEL;
    EXPECT_NULL("decnet_updater_wait_for_release", "updater",
                decnet_updater_wait_for_release(NULL, "s", 10, 10, &out), out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_updater_wait_for_release", "sha",
                decnet_updater_wait_for_release(updater, NULL, 10, 10, &out), out == NULL);
    EXPECT_NULL("decnet_updater_wait_for_release", "out_json",
                decnet_updater_wait_for_release(updater, "s", 10, 10, NULL), true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_updater_wait_for_release", "sha",
                decnet_updater_wait_for_release(updater, BAD_UTF8, 10, 10, &out), out == NULL);
}

static void test_updater_calls(const decnet_identity *identity) {
    decnet_updater *ok = updater_for(identity, g_updater_ok, "ok");
    decnet_updater *probe = updater_for(identity, g_updater_probe, "probe");
    decnet_updater *selfdrop = updater_for(identity, g_updater_selfdrop, "selfdrop");
    if (ok == NULL || probe == NULL || selfdrop == NULL) {
        decnet_updater_free(ok);
        decnet_updater_free(probe);
        decnet_updater_free(selfdrop);
        return;
    }
    test_updater_timeouts(ok);
    test_updater_arguments(ok);

    char *json = NULL;
    static const uint8_t first[] = "first release bytes\r\n--\r\n";
    cover("call", "decnet_updater_health", NULL);
    RPC_OK("decnet_updater_health", decnet_updater_health(ok, &json), json);
    CHECK(contains(json, "\"role\":\"updater\""), "updater health: role updater");
    decnet_string_free(json);
    cover("call", "decnet_updater_update", NULL);
    json = NULL;
    RPC_OK("decnet_updater_update(bytes)", decnet_updater_update(ok, NULL, first, sizeof first - 1, "c1", &json),
           json);
    CHECK(contains(json, "\"status\":\"updated\"") && contains(json, "\"sha\":\"c1\""), "update answers updated c1");
    decnet_string_free(json);
    cover("null", "decnet_updater_update", "tarball_path");
    const char *file = path_in(g_tmp, "tree.tgz");
    CHECK(write_file(file, "second release from a file"), "write a tarball file");
    json = NULL;
    RPC_OK("decnet_updater_update(file)", decnet_updater_update(ok, file, NULL, 0, "c2", &json), json);
    CHECK(contains(json, "\"sha\":\"c2\""), "update from a file answers c2");
    decnet_string_free(json);
    cover("call", "decnet_updater_releases", NULL);
    json = NULL;
    RPC_OK("decnet_updater_releases", decnet_updater_releases(ok, &json), json);
    CHECK(contains(json, "\"sha\":\"c2\"") && contains(json, "\"sha\":\"c1\""), "releases list c2 and c1");
    decnet_string_free(json);
    cover("call", "decnet_updater_rollback", NULL);
    json = NULL;
    RPC_OK("decnet_updater_rollback", decnet_updater_rollback(ok, &json), json);
    CHECK(contains(json, "\"status\":\"rolled_back\"") && contains(json, "\"sha\":\"c1\""), "rolled back to c1");
    decnet_string_free(json);
    json = SENTINEL;
    decnet_result rc = decnet_updater_rollback(ok, &json);
    expect_error("rollback with no previous release", rc, DECNET_ERR_HTTP_STATUS, NULL);
    CHECK(decnet_last_error_http_status() == 404 && json == NULL, "no previous release: 404");
    cover("call", "decnet_last_error_update_error", NULL);
    cover("call", "decnet_last_error_update_stderr", NULL);
    cover("call", "decnet_last_error_rolled_back", NULL);
    CHECK(decnet_last_error_update_error() == NULL && decnet_last_error_rolled_back() == -1,
          "a string detail has no update fields");

    /* 409: the detail object's fields, read without parsing text. */
    json = SENTINEL;
    rc = decnet_updater_update(probe, NULL, first, sizeof first - 1, "bad", &json);
    expect_error("update that fails its probe", rc, DECNET_ERR_HTTP_STATUS, NULL);
    CHECK(json == NULL, "409: out left NULL");
    CHECK(decnet_last_error_http_status() == 409, "409 status");
    CHECK(same(decnet_last_error_update_error(), "probe failed"), "409 detail.error");
    CHECK(same(decnet_last_error_update_stderr(), "agent: health probe timed out\n"), "409 detail.stderr");
    CHECK(decnet_last_error_rolled_back() == 1, "409 detail.rolled_back is true");

    /* update-self: the updater closes after the whole request. */
    cover("call", "decnet_updater_update_self", NULL);
    bool closed = false;
    json = SENTINEL;
    rc = decnet_updater_update_self(selfdrop, NULL, first, sizeof first - 1, "self1", &closed, &json);
    expect_ok("update_self on a dropping updater", rc);
    CHECK(closed && json == NULL, "update_self: connection closed after the request, no body");
    cover("call", "decnet_updater_wait_for_release", NULL);
    json = NULL;
    RPC_OK("decnet_updater_wait_for_release(self1)",
           decnet_updater_wait_for_release(selfdrop, "self1", 20000, 50, &json), json);
    CHECK(contains(json, "\"sha\":\"self1\""), "health shows self1 active");
    decnet_string_free(json);
    json = SENTINEL;
    double t0 = now_seconds();
    rc = decnet_updater_wait_for_release(selfdrop, "never", 300, 50, &json);
    expect_error("wait for a release that never comes", rc, DECNET_ERR_TIMEOUT, NULL);
    CHECK(json == NULL && now_seconds() - t0 < 10.0, "the wait ends at its deadline");
    closed = true;
    json = NULL;
    rc = decnet_updater_update_self(ok, NULL, first, sizeof first - 1, "self2", &closed, &json);
    expect_ok("update_self answered", rc);
    cover("null", "decnet_updater_update_self", "tarball_path");
    CHECK(!closed && contains(json, "self_update_queued"), "update_self answered 200 self_update_queued");
    decnet_string_free(json);

    decnet_updater_free(ok);
    decnet_updater_free(probe);
    decnet_updater_free(selfdrop);
}

static void test_enroll(void) {
    const char *ca = path_in(g_tmp, "enroll-ca");
    decnet_identity *identity = NULL;
    expect_ok("a CA for enrollment", decnet_identity_ensure(ca, &identity));
    decnet_identity_free(identity);
    const char *sans[] = {"10.0.0.9", "w1.example"};
    char *json = SENTINEL;

    cover("call", "decnet_enroll", NULL);
    decnet_result rc = decnet_enroll(ca, "w1", "127.0.0.1", sans, 2, 0, true, false, &json);
    expect_ok("decnet_enroll(w1)", rc);
    char value[80];
    CHECK(json_string(json, "name", value, sizeof value) && same(value, "w1"), "record name");
    CHECK(json_number(json, "agent_port") == 8765, "record agent_port defaults to 8765");
    CHECK(json_string(json, "client_cert_fingerprint", value, sizeof value) && is_hex64(value),
          "record client_cert_fingerprint");
    CHECK(json_string(json, "updater_cert_fingerprint", value, sizeof value) && is_hex64(value),
          "record updater_cert_fingerprint");
    CHECK(json_string(json, "uuid", value, sizeof value) && strlen(value) == 36, "record uuid");
    decnet_string_free(json);
    const char *dir = keepf("%s/workers/w1", ca);
    CHECK(file_mode(dir) == 0700 && file_mode(keepf("%s/updater", dir)) == 0700, "enrolled folders are 0700");
    CHECK(file_mode(keepf("%s/worker.key", dir)) == 0600 && file_mode(keepf("%s/updater/updater.key", dir)) == 0600,
          "enrolled keys are 0600");
    CHECK(exists(keepf("%s/ca.crt", dir)) && exists(keepf("%s/worker.crt", dir)) &&
              exists(keepf("%s/updater/updater.crt", dir)),
          "enrolled certificates written");

    json = SENTINEL;
    rc = decnet_enroll(ca, "w1", "127.0.0.1", NULL, 0, 0, false, false, &json);
    expect_error("enrolling w1 again", rc, DECNET_ERR_INVALID_ARGUMENT, "name");
    CHECK(json == NULL && message_has("already enrolled"), "a second enrollment is refused");
    json = NULL;
    rc = decnet_enroll(ca, "w1", "127.0.0.1", NULL, 0, 9000, false, true, &json);
    expect_ok("re-issuing w1 without an updater", rc);
    CHECK(contains(json, "\"updater_cert_fingerprint\":null") && json_number(json, "agent_port") == 9000,
          "re-issue: no updater pin, agent_port 9000");
    decnet_string_free(json);

    /* No CA: NOT_ENROLLED, as the header says, with the fix in the message. */
    json = SENTINEL;
    rc = decnet_enroll(path_in(g_tmp, "no-such-ca"), "w1", "127.0.0.1", NULL, 0, 0, true, false, &json);
    expect_error("enrolling with no CA", rc, DECNET_ERR_NOT_ENROLLED, NULL);
    CHECK(message_has("run identity-ensure"), "no CA: the message says to run identity-ensure");
    CHECK(json == NULL && !exists(path_in(g_tmp, "no-such-ca")), "no CA: nothing written, out left NULL");

    /* NULL ca_dir: $HOME/.decnet/ca (HOME is the scratch folder). */
    identity = NULL;
    expect_ok("the default CA", decnet_identity_ensure(NULL, &identity));
    decnet_identity_free(identity);
    json = NULL;
    rc = decnet_enroll(NULL, "w-home", "127.0.0.1", NULL, 0, 0, true, false, &json);
    expect_null_allowed("decnet_enroll", "ca_dir", rc);
    CHECK(exists(keepf("%s/.decnet/ca/workers/w-home/updater/updater.key", getenv("HOME"))),
          "NULL ca_dir enrolls under $HOME/.decnet/ca");
    decnet_string_free(json);
    json = SENTINEL;
    EXPECT_NULL("decnet_enroll", "name", decnet_enroll(ca, NULL, "127.0.0.1", NULL, 0, 0, true, false, &json),
                json == NULL);
    json = SENTINEL;
    EXPECT_NULL("decnet_enroll", "address", decnet_enroll(ca, "w2", NULL, NULL, 0, 0, true, false, &json),
                json == NULL);
    json = SENTINEL;
    EXPECT_NULL("decnet_enroll", "sans", decnet_enroll(ca, "w2", "127.0.0.1", NULL, 1, 0, true, false, &json),
                json == NULL);
    EXPECT_NULL("decnet_enroll", "out_json", decnet_enroll(ca, "w2", "127.0.0.1", NULL, 0, 0, true, false, NULL),
                true);
    const char *bad_sans[] = {BAD_UTF8};
    json = SENTINEL;
    EXPECT_UTF8("decnet_enroll", "ca_dir", decnet_enroll(BAD_UTF8, "w2", "127.0.0.1", NULL, 0, 0, true, false, &json),
                json == NULL);
    json = SENTINEL;
    EXPECT_UTF8("decnet_enroll", "name", decnet_enroll(ca, BAD_UTF8, "127.0.0.1", NULL, 0, 0, true, false, &json),
                json == NULL);
    json = SENTINEL;
    EXPECT_UTF8("decnet_enroll", "address", decnet_enroll(ca, "w2", BAD_UTF8, NULL, 0, 0, true, false, &json),
                json == NULL);
    json = SENTINEL;
    EXPECT_UTF8("decnet_enroll", "sans", decnet_enroll(ca, "w2", "127.0.0.1", bad_sans, 1, 0, true, false, &json),
                json == NULL);
    CHECK(!exists(keepf("%s/workers/w2", ca)), "rejected enrollments wrote nothing");
    json = SENTINEL;
    rc = decnet_enroll(path_in(g_tmp, "no-ca-here"), "w2", "127.0.0.1", NULL, 0, 0, true, false, &json);
    CHECK(rc != DECNET_OK && json == NULL, "enrolling without a CA fails");
}

/* In updater_fleet_boundary.h: it needs the updater records loaded here. */
static void test_updater_fleet_boundary(const decnet_identity *identity);

static void test_updater_and_enroll(const decnet_identity *identity, const char *hosts_dir) {
    if (load_updaters(hosts_dir)) {
        test_updater_new(identity);
        test_updater_calls(identity);
        test_updater_fleet_boundary(identity);
    }
    test_enroll();
    free(g_updater_ok);
    free(g_updater_probe);
    free(g_updater_selfdrop);
}
