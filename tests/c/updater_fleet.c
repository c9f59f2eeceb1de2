/*
 * updater_fleet.c -- rollouts over stand-in updaters driven from C.
 *
 *   updater_fleet CA_DIR HOSTS_DIR
 *
 * HOSTS_DIR is the stand-in worker's (run.sh starts it); its updaters'
 * records are in HOSTS_DIR/../updaters/{ok,probe,selfdrop}.json. Checks,
 * from C, through decnet_updater_fleet_push / _rollback / _call:
 *  - a canary that fails (the `probe` updater answers 409) stops the
 *    rollout: the other hosts are "not-attempted", get no callback, and
 *    their releases show nothing of the pushed release;
 *  - agent then updater with verify: the `ok` updater answers update-self,
 *    `selfdrop` closes the connection and installs later; both end
 *    "self-updated", the dropped one with no HTTP status and a verify time;
 *  - a non-zero callback return starts no new host ("stopped");
 *  - a rollback reports "rolled-back", and "failed" with 404 where there is
 *    no previous release;
 *  - a sharded deploy (decnet_fleet_deploy_sharded) over the `ok` and
 *    `deployfail` workers: each gets its own deckies, and the probe after
 *    the part-way failure says which are up.
 * Everything received is freed. Prints "N passed, M failed" alone on the
 * last line; exits 1 on any failure.
 */
#define _XOPEN_SOURCE 700

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <decnet_agent_client.h>

#include "read_file.h"

static int g_passed;
static int g_failed;

static void check_at(bool ok, const char *what, int line) {
    if (ok) {
        g_passed++;
        return;
    }
    g_failed++;
    fprintf(stderr, "FAIL (updater_fleet.c:%d) %s\n", line, what);
}
#define CHECK(cond, what) check_at((cond) ? true : false, (what), __LINE__)

static bool has(const char *json, const char *text) { return json != NULL && strstr(json, text) != NULL; }

/* The `n`th host object of a rollout's results, copied into `buf` (host
 * objects are flat: the first '}' ends one). */
static const char *host_at(const char *results, int n, char *buf, size_t size) {
    buf[0] = '\0';
    const char *at = results ? strstr(results, "\"hosts\":[") : NULL;
    for (int i = 0; at != NULL && i <= n; i++) {
        at = strchr(at + 1, '{');
        if (at != NULL && i < n) {
            at = strchr(at, '}');
        }
    }
    const char *end = at ? strchr(at, '}') : NULL;
    if (end != NULL && (size_t)(end - at + 1) < size) {
        memcpy(buf, at, (size_t)(end - at + 1));
        buf[end - at + 1] = '\0';
    }
    return buf;
}

static char *g_ok;
static char *g_probe;
static char *g_selfdrop;

static decnet_updater_fleet *fleet_of(const decnet_identity *identity, const char *a, const char *b,
                                      const char *c) {
    char hosts[8192];
    snprintf(hosts, sizeof hosts, "[%s,%s%s%s]", a, b, c ? "," : "", c ? c : "");
    decnet_updater_fleet *fleet = NULL;
    decnet_result rc = decnet_updater_fleet_new_from_json(identity, hosts, DECNET_HOSTNAME_ON, &fleet);
    CHECK(rc == DECNET_OK, "decnet_updater_fleet_new_from_json");
    if (rc != DECNET_OK) {
        fprintf(stderr, "  %s\n", decnet_last_error_message());
    }
    return fleet;
}

struct seen {
    int calls;
    int stop_after;
    char names[8][16];
};

static int record_callback(const char *result_json, void *user_data) {
    struct seen *seen = user_data;
    const char *name = strstr(result_json, "\"name\":\"");
    if (seen->calls < 8 && name != NULL) {
        snprintf(seen->names[seen->calls], sizeof seen->names[0], "%.*s", (int)strcspn(name + 8, "\""), name + 8);
    }
    seen->calls++;
    return seen->stop_after > 0 && seen->calls >= seen->stop_after;
}

static void write_tarball(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL && fputs(text, f) >= 0 && fclose(f) == 0, "write the tarball");
}

static void test_failing_canary(const decnet_identity *identity, const char *tarball) {
    decnet_updater_fleet *fleet = fleet_of(identity, g_probe, g_ok, g_selfdrop);
    if (fleet == NULL) {
        return;
    }
    struct seen seen = {0};
    char *out = NULL;
    decnet_result rc = decnet_updater_fleet_push(fleet, tarball, "c-canary", NULL, "{\"canary\": 1}", NULL,
                                                 record_callback, &seen, &out);
    CHECK(rc == DECNET_OK, "push with a failing canary runs");
    char host[4096];
    CHECK(has(out, "\"stop\":\"canary-failed\""), "the rollout stopped: canary-failed");
    CHECK(has(host_at(out, 0, host, sizeof host), "\"status\":\"rolled-back\"") && has(host, "\"http_status\":409") &&
              has(host, "\"rolled_back\":true") && has(host, "\"wave\":\"canary\""),
          "the canary rolled back (409, rolled_back true)");
    CHECK(has(host_at(out, 1, host, sizeof host), "\"status\":\"not-attempted\""), "host 1 not attempted");
    CHECK(has(host_at(out, 2, host, sizeof host), "\"status\":\"not-attempted\""), "host 2 not attempted");
    CHECK(has(out, "\"not-attempted\":2"), "the summary counts 2 not attempted");
    CHECK(seen.calls == 1 && strcmp(seen.names[0], "probe") == 0, "one callback, for the canary");
    decnet_string_free(out);
    out = NULL;
    rc = decnet_updater_fleet_call(fleet, "releases", NULL, NULL, NULL, NULL, NULL, &out);
    CHECK(rc == DECNET_OK && !has(out, "c-canary"), "no host holds the halted release");
    decnet_string_free(out);
    decnet_updater_fleet_free(fleet);
}

static void test_self_update_with_verify(const decnet_identity *identity, const char *tarball) {
    decnet_updater_fleet *fleet = fleet_of(identity, g_ok, g_selfdrop, NULL);
    if (fleet == NULL) {
        return;
    }
    char *out = NULL;
    decnet_sweep_options options = {.concurrency = 2, .deadline_ms = 60000};
    decnet_result rc = decnet_updater_fleet_push(fleet, tarball, "c-self", NULL,
                                                 "{\"canary\": 1, \"self_update\": true, \"verify\": 20}", &options,
                                                 NULL, NULL, &out);
    CHECK(rc == DECNET_OK, "push with self_update and verify runs");
    char host[4096];
    CHECK(has(out, "\"stop\":\"completed\"") && has(out, "\"self-updated\":2"), "both self-updated, completed");
    CHECK(has(host_at(out, 0, host, sizeof host), "\"http_status\":200") && has(host, "\"wave\":\"canary\""),
          "ok: update-self answered 200");
    host_at(out, 1, host, sizeof host);
    CHECK(has(host, "\"http_status\":null") && !has(host, "\"verify_ms\":null") && has(host, "\"wave\":1"),
          "selfdrop: the dropped update-self has no status, verify confirmed it");
    decnet_string_free(out);
    out = NULL;
    rc = decnet_updater_fleet_call(fleet, "health", NULL, NULL, NULL, NULL, NULL, &out);
    const char *first = out ? strstr(out, "\"sha\":\"c-self\"") : NULL;
    CHECK(rc == DECNET_OK && first != NULL && strstr(first + 1, "\"sha\":\"c-self\"") != NULL,
          "both updaters' health shows the new release");
    decnet_string_free(out);
    decnet_updater_fleet_free(fleet);
}

static void test_stop_and_rollback(const decnet_identity *identity, const char *tarball) {
    decnet_updater_fleet *fleet = fleet_of(identity, g_ok, g_probe, NULL);
    if (fleet == NULL) {
        return;
    }
    struct seen seen = {.stop_after = 1};
    char *out = NULL;
    decnet_sweep_options serial = {.concurrency = 1, .deadline_ms = 0};
    decnet_result rc = decnet_updater_fleet_push(fleet, tarball, "c-stop", NULL, "{\"canary\": 0}", &serial,
                                                 record_callback, &seen, &out);
    CHECK(rc == DECNET_OK && has(out, "\"stop\":\"stopped\""), "a non-zero callback return: stopped");
    char host[4096];
    CHECK(has(host_at(out, 0, host, sizeof host), "\"status\":\"updated\""), "host 0 updated");
    CHECK(has(host_at(out, 1, host, sizeof host), "\"status\":\"not-attempted\""), "host 1 not attempted");
    CHECK(seen.calls == 1, "no callback after the stop");
    decnet_string_free(out);
    out = NULL;
    rc = decnet_updater_fleet_rollback(fleet, "{\"canary\": 0}", NULL, NULL, NULL, &out);
    CHECK(rc == DECNET_OK, "rollback runs");
    CHECK(has(host_at(out, 0, host, sizeof host), "\"status\":\"rolled-back\""), "ok rolled back");
    CHECK(has(host_at(out, 1, host, sizeof host), "\"status\":\"failed\"") && has(host, "\"http_status\":404"),
          "probe has no previous release: failed, 404");
    decnet_string_free(out);
    decnet_updater_fleet_free(fleet);
}

static void test_sharded_deploy(const decnet_identity *identity, const char *hosts_dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/ok.json", hosts_dir);
    char *ok = read_file(path);
    snprintf(path, sizeof path, "%s/deployfail.json", hosts_dir);
    char *failing = read_file(path);
    CHECK(ok && failing, "read the ok and deployfail worker records");
    char hosts[8192];
    snprintf(hosts, sizeof hosts, "[%s,%s]", ok ? ok : "{}", failing ? failing : "{}");
    decnet_fleet *fleet = NULL;
    decnet_result rc = decnet_fleet_new(identity, hosts, DECNET_HOSTNAME_ON, &fleet);
    CHECK(rc == DECNET_OK, "fleet of the ok and deployfail workers");
    const char *config = "{\"mode\":\"swarm\",\"deckies\":["
                         "{\"name\":\"s1\",\"services\":[\"ssh\"],\"host_uuid\":\"uuid-deployfail\"},"
                         "{\"name\":\"s2\",\"services\":[\"ssh\"],\"host_uuid\":\"uuid-ok\"},"
                         "{\"name\":\"s3\",\"services\":[\"ssh\"],\"host_uuid\":\"uuid-deployfail\"}]}";
    char *out = NULL;
    if (rc == DECNET_OK) {
        rc = decnet_fleet_deploy_sharded(fleet, config, true, NULL, NULL, NULL, &out);
        CHECK(rc == DECNET_OK, "decnet_fleet_deploy_sharded runs");
        CHECK(has(out, "\"deckies\":[\"s2\"]") && has(out, "\"deckies\":[\"s1\",\"s3\"]"),
              "each host gets its own deckies");
        CHECK(has(out, "\"probe\":{\"down\":[\"s3\"],\"running\":[\"s1\"]}"),
              "the probe after the part-way deploy: s1 up, s3 down");
        CHECK(has(out, "\"http_status\":500"), "the failed deploy's status");
    }
    decnet_string_free(out);
    decnet_fleet_free(fleet);
    free(ok);
    free(failing);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CA_DIR HOSTS_DIR\n", argv[0]);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/../updaters/ok.json", argv[2]);
    g_ok = read_file(path);
    snprintf(path, sizeof path, "%s/../updaters/probe.json", argv[2]);
    g_probe = read_file(path);
    snprintf(path, sizeof path, "%s/../updaters/selfdrop.json", argv[2]);
    g_selfdrop = read_file(path);
    CHECK(g_ok && g_probe && g_selfdrop, "read the three updater records");
    decnet_identity *identity = NULL;
    CHECK(decnet_identity_ensure(argv[1], &identity) == DECNET_OK, "master identity");
    char tarball[] = "/tmp/decnet-updater-fleet.XXXXXX";
    int fd = mkstemp(tarball);
    CHECK(fd >= 0, "a temporary tarball file");
    if (g_ok && g_probe && g_selfdrop && identity != NULL && fd >= 0) {
        write_tarball(tarball, "a release for the whole fleet");
        test_failing_canary(identity, tarball);
        test_self_update_with_verify(identity, tarball);
        test_stop_and_rollback(identity, tarball);
    }
    if (identity != NULL) {
        test_sharded_deploy(identity, argv[2]);
    }
    if (fd >= 0) {
        close(fd);
        remove(tarball);
    }
    decnet_identity_free(identity);
    free(g_ok);
    free(g_probe);
    free(g_selfdrop);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
