/*
 * fleet.c -- a fleet driven from C, its callback included.
 *
 *   fleet SWARM_DIR
 *
 * SWARM_DIR is served by the `swarm` example (run.sh starts it): its CA
 * in SWARM_DIR/ca, the pinned host records in SWARM_DIR/hosts.json and,
 * in the same order, each host's `behaviour` (healthy, stall, wrong-cert,
 * refuse, server-error) in SWARM_DIR/members.json. Checks, from C:
 *  - a health sweep of every host: one callback per host, on the calling
 *    thread, each with that host's result; the results array in input
 *    order; each host's outcome of the right kind (ok, timeout,
 *    pin_mismatch with both fingerprints, connect, http_status 500);
 *  - callback order is completion order: the stalled hosts come last;
 *  - per-host arguments: a deploy with each healthy host's own config,
 *    addressed by uuid, comes back with that host's decky name;
 *  - a non-zero return stops the sweep: no further callbacks, and the
 *    hosts never started are "not_attempted".
 * Everything received is freed. Prints "N passed, M failed" alone on the
 * last line; exits 1 on any failure.
 */
#define _XOPEN_SOURCE 700

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <decnet_agent_client.h>

#include "read_file.h"

#define MAX_HOSTS 1024

static int g_passed;
static int g_failed;

static void check_at(bool ok, const char *what, int line) {
    if (ok) {
        g_passed++;
        return;
    }
    g_failed++;
    fprintf(stderr, "FAIL (fleet.c:%d) %s\n", line, what);
}
#define CHECK(cond, what) check_at((cond) ? true : false, (what), __LINE__)

/* The integer after "\"key\":" in `json`, or -1. */
static long json_int(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(json, pattern);
    return at == NULL ? -1 : strtol(at + strlen(pattern), NULL, 10);
}

static bool has(const char *json, const char *text) { return json != NULL && strstr(json, text) != NULL; }

/* Behaviour of each host, read from members.json (one per record, in order). */
static char g_behaviour[MAX_HOSTS][16];
static size_t g_hosts;

static bool load_behaviours(const char *hosts) {
    const char *at = hosts;
    while ((at = strstr(at, "\"behaviour\":\"")) != NULL && g_hosts < MAX_HOSTS) {
        at += strlen("\"behaviour\":\"");
        size_t n = strcspn(at, "\"");
        if (n >= sizeof g_behaviour[0]) {
            return false;
        }
        memcpy(g_behaviour[g_hosts], at, n);
        g_behaviour[g_hosts][n] = '\0';
        g_hosts++;
    }
    return g_hosts > 0;
}

static bool is(size_t index, const char *behaviour) { return strcmp(g_behaviour[index], behaviour) == 0; }

/* What the callback saw. */
struct seen {
    pthread_t caller;
    bool on_caller_thread;
    size_t calls;
    size_t stop_after; /* 0: never stop */
    long order[MAX_HOSTS];
    char *result[MAX_HOSTS]; /* copies, by host index */
};

static int on_result(const char *host_result_json, void *user_data) {
    struct seen *seen = user_data;
    if (!pthread_equal(pthread_self(), seen->caller)) {
        seen->on_caller_thread = false;
    }
    long index = json_int(host_result_json, "index");
    if (seen->calls < MAX_HOSTS) {
        seen->order[seen->calls] = index;
    }
    seen->calls++;
    if (index >= 0 && (size_t)index < MAX_HOSTS && seen->result[index] == NULL) {
        seen->result[index] = strdup(host_result_json);
    }
    return seen->stop_after != 0 && seen->calls >= seen->stop_after;
}

static void forget(struct seen *seen) {
    for (size_t i = 0; i < MAX_HOSTS; i++) {
        free(seen->result[i]);
        seen->result[i] = NULL;
    }
}

static void check_outcome(size_t i, const char *r) {
    char what[128];
    snprintf(what, sizeof what, "host %zu (%s): outcome of the right kind", i, g_behaviour[i]);
    if (is(i, "healthy")) {
        CHECK(has(r, "\"outcome\":\"ok\"") && has(r, "\"result\":{\"status\":\"ok\"}"), what);
    } else if (is(i, "stall")) {
        CHECK(has(r, "\"kind\":\"timeout\"") && json_int(r, "code") == DECNET_ERR_TIMEOUT, what);
    } else if (is(i, "wrong-cert")) {
        CHECK(has(r, "\"kind\":\"pin_mismatch\"") && has(r, "\"expected_fingerprint\":\"") &&
                  has(r, "\"actual_fingerprint\":\""),
              what);
    } else if (is(i, "refuse")) {
        CHECK(has(r, "\"kind\":\"connect\""), what);
    } else if (is(i, "server-error")) {
        CHECK(has(r, "\"kind\":\"http_status\"") && json_int(r, "http_status") == 500 &&
                  has(r, "\"detail\":\"simulated worker failure\""),
              what);
    } else {
        CHECK(false, what);
    }
    char name[32];
    snprintf(name, sizeof name, "\"name\":\"w%zu\"", i);
    CHECK(has(r, name) && has(r, "\"address\":\"127.0.0.1:") && has(r, "\"elapsed_ms\":"),
          "host result names its host");
}

/* The results array lists hosts 0..n-1 in order. */
static bool in_input_order(const char *results, size_t n) {
    const char *at = results;
    for (size_t i = 0; i < n; i++) {
        at = strstr(at, "\"index\":");
        if (at == NULL || strtol(at + 8, NULL, 10) != (long)i) {
            return false;
        }
        at += 8;
    }
    return strstr(at, "\"index\":") == NULL;
}

static size_t count(const char *text, const char *needle) {
    size_t n = 0;
    for (const char *at = text; (at = strstr(at, needle)) != NULL; at += strlen(needle)) {
        n++;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SWARM_DIR\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/members.json", argv[1]);
    char *members = read_file(path);
    CHECK(members != NULL && load_behaviours(members), "read the swarm's members.json");
    free(members);
    snprintf(path, sizeof path, "%s/hosts.json", argv[1]);
    char *hosts = read_file(path);
    CHECK(hosts != NULL, "read the swarm's hosts.json");
    if (hosts == NULL || g_hosts == 0) {
        free(hosts);
        printf("%d passed, %d failed\n", g_passed, g_failed);
        return 1;
    }
    snprintf(path, sizeof path, "%s/ca", argv[1]);
    decnet_identity *identity = NULL;
    decnet_fleet *fleet = NULL;
    decnet_result rc = decnet_identity_ensure(path, &identity);
    CHECK(rc == DECNET_OK, "master identity");
    rc = decnet_fleet_new(identity, hosts, DECNET_HOSTNAME_ON, &fleet);
    CHECK(rc == DECNET_OK, "decnet_fleet_new(hosts.json)");
    decnet_identity_free(identity); /* the fleet keeps what it needs */
    free(hosts);
    if (rc != DECNET_OK) {
        printf("%d passed, %d failed\n", g_passed, g_failed);
        return 1;
    }
    size_t size = 0;
    CHECK(decnet_fleet_size(fleet, &size) == DECNET_OK && size == g_hosts, "every host is in the fleet");
    decnet_timeouts t = {.connect_ms = 5000, .read_ms = 2000, .write_ms = 5000, .pool_ms = 1000};
    CHECK(decnet_fleet_set_timeouts(fleet, DECNET_PROFILE_CONTROL, &t) == DECNET_OK, "read timeout 2 s");

    /* 1. Health of every host, with a callback. */
    static struct seen seen;
    seen.caller = pthread_self();
    seen.on_caller_thread = true;
    char *results = NULL;
    decnet_sweep_options options = {.concurrency = 16, .deadline_ms = 0};
    rc = decnet_fleet_call(fleet, "health", NULL, &options, on_result, &seen, &results);
    CHECK(rc == DECNET_OK && results != NULL, "health sweep ran");
    CHECK(seen.calls == g_hosts, "one callback per host");
    CHECK(seen.on_caller_thread, "every callback on the calling thread");
    CHECK(results != NULL && in_input_order(results, g_hosts), "results in input order");
    size_t stalled = 0;
    for (size_t i = 0; i < g_hosts; i++) {
        stalled += is(i, "stall");
        CHECK(seen.result[i] != NULL, "each host reached the callback");
        if (seen.result[i] != NULL) {
            check_outcome(i, seen.result[i]);
        }
    }
    /* Completion order: the stalled hosts (2 s each) finish last. */
    bool stalls_last = stalled > 0;
    for (size_t k = g_hosts - stalled; k < g_hosts && k < MAX_HOSTS; k++) {
        stalls_last = stalls_last && seen.order[k] >= 0 && is((size_t)seen.order[k], "stall");
    }
    CHECK(stalls_last, "callback order is completion order: the stalled hosts come last");
    decnet_string_free(results);
    forget(&seen);

    /* 2. Per-host arguments, hosts addressed by uuid. */
    size_t plan_cap = 256 * g_hosts + 16, used = 0, healthy = 0;
    char *plan = malloc(plan_cap);
    used += (size_t)snprintf(plan + used, plan_cap - used, "[");
    for (size_t i = 0; i < g_hosts; i++) {
        if (!is(i, "healthy")) {
            continue;
        }
        used += (size_t)snprintf(plan + used, plan_cap - used,
                                 "%s{\"host\":\"uuid-w%zu\",\"args\":{\"config\":{\"deckies\":"
                                 "[{\"name\":\"decky-of-w%zu\",\"services\":[\"ssh\"]}]},\"dry_run\":true}}",
                                 healthy ? "," : "", i, i);
        healthy++;
    }
    snprintf(plan + used, plan_cap - used, "]");
    seen.calls = 0;
    rc = decnet_fleet_call(fleet, "deploy", plan, NULL, on_result, &seen, &results);
    CHECK(rc == DECNET_OK, "deploy sweep ran");
    CHECK(seen.calls == healthy, "one callback per planned host");
    for (size_t i = 0; i < g_hosts; i++) {
        if (!is(i, "healthy")) {
            CHECK(seen.result[i] == NULL, "an unplanned host gets no call");
            continue;
        }
        char mine[64];
        snprintf(mine, sizeof mine, "\"deckies\":[\"decky-of-w%zu\"]", i);
        CHECK(has(seen.result[i], "\"outcome\":\"ok\"") && has(seen.result[i], mine),
              "each host got its own config");
    }
    CHECK(results != NULL && count(results, "\"outcome\":\"ok\"") == healthy, "every deploy accepted");
    decnet_string_free(results);
    free(plan);
    forget(&seen);

    /* 3. Stop after the first callback, one host at a time. */
    seen.calls = 0;
    seen.stop_after = 1;
    options.concurrency = 1;
    rc = decnet_fleet_call(fleet, "status", NULL, &options, on_result, &seen, &results);
    CHECK(rc == DECNET_OK, "stopped sweep still returns its results");
    CHECK(seen.calls == 1, "no callback after the stop");
    size_t not_attempted = results == NULL ? 0 : count(results, "\"outcome\":\"not_attempted\"");
    /* w0 stalls; w1 may be taken before the stop lands; w2 stalls, so no
     * later host can start before it: at most three are attempted. */
    CHECK(not_attempted + 3 >= g_hosts && not_attempted < g_hosts,
          "the hosts never started are not_attempted");
    CHECK(results != NULL && in_input_order(results, g_hosts), "stopped sweep: results in input order");
    decnet_string_free(results);
    forget(&seen);

    decnet_fleet_free(fleet);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
