/* log_events.c -- decnet_set_log_callback from C: the events one call
 * raises, in order; none carries key material; a callback that calls back
 * into the library (a call, a new callback) neither deadlocks nor recurses.
 *
 *   log_events CA_DIR HOSTS_DIR
 *
 * Uses the stand-in's `ok` and `nonjson` workers and the master identity
 * in CA_DIR (its key is the text no event may carry).
 */
#define _XOPEN_SOURCE 700 /* strdup */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decnet_agent_client.h"
#include "read_file.h"

static int g_passed;
static int g_failed;

static void check(bool ok, const char *what) {
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        fprintf(stderr, "FAIL: %s\n", what);
    }
}

#define MAX_EVENTS 256
static char *g_events[MAX_EVENTS];
static uint32_t g_levels[MAX_EVENTS];
static size_t g_count;

static void forget_events(void) {
    for (size_t i = 0; i < g_count; i++) {
        free(g_events[i]);
    }
    g_count = 0;
}

/* Copies each event: the text is only borrowed for the callback. */
static void record(uint32_t level, const char *event_json, void *user_data) {
    int *calls = user_data;
    (*calls)++;
    if (g_count < MAX_EVENTS) {
        g_levels[g_count] = level;
        g_events[g_count] = strdup(event_json);
        g_count++;
    }
}

static bool is_event(size_t i, const char *name) {
    char needle[128];
    snprintf(needle, sizeof needle, "\"event\":\"%s\"", name);
    return i < g_count && strstr(g_events[i], needle) != NULL;
}

static void print_events(void) {
    for (size_t i = 0; i < g_count; i++) {
        printf("  [%u] %s\n", g_levels[i], g_events[i]);
    }
}

/* The sequence of event names matches `names` (NULL-terminated). */
static bool sequence_is(const char *const *names) {
    size_t n = 0;
    while (names[n] != NULL) {
        if (!is_event(n, names[n])) {
            return false;
        }
        n++;
    }
    return n == g_count;
}

/* A re-entrant callback: on the first answer it calls the library again
 * (a request, the level getter, and a replacement of itself). */
static decnet_client *g_client;
static int g_inner_result = -1;
static uint32_t g_inner_level;
static void reentrant(uint32_t level, const char *event_json, void *user_data) {
    record(level, event_json, user_data);
    if (g_inner_result == -1 && strstr(event_json, "\"event\":\"request.answered\"") != NULL) {
        char *answer = NULL;
        g_inner_result = (int)decnet_client_status(g_client, &answer);
        decnet_string_free(answer);
        g_inner_level = decnet_get_log_level();
        decnet_set_log_callback(DECNET_LOG_INFO, record, user_data);
    }
}

/* No 24-character run of the key's base64 text appears in any event. */
static bool leaks(const char *pem) {
    if (pem == NULL) {
        return true; /* unreadable key: fail loudly */
    }
    for (size_t i = 0; i < g_count; i++) {
        if (strstr(g_events[i], "PRIVATE KEY") != NULL) {
            return true;
        }
    }
    const char *line = pem;
    while (*line != '\0') {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len >= 24 && line[0] != '-') {
            for (size_t start = 0; start + 24 <= len; start += 8) {
                char piece[25];
                memcpy(piece, line + start, 24);
                piece[24] = '\0';
                for (size_t i = 0; i < g_count; i++) {
                    if (strstr(g_events[i], piece) != NULL) {
                        return true;
                    }
                }
            }
        }
        line = end ? end + 1 : line + len;
    }
    return false;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: log_events CA_DIR HOSTS_DIR\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/ok.json", argv[2]);
    char *host_ok = read_file(path);
    snprintf(path, sizeof path, "%s/nonjson.json", argv[2]);
    char *host_nonjson = read_file(path);
    snprintf(path, sizeof path, "%s/master/worker.key", argv[1]);
    char *master_key = read_file(path);
    snprintf(path, sizeof path, "%s/ca.key", argv[1]);
    char *ca_key = read_file(path);
    decnet_identity *identity = NULL;
    decnet_client *client = NULL;
    decnet_client *nonjson = NULL;
    char *answer = NULL;
    int calls = 0;

    bool ready = host_ok != NULL && host_nonjson != NULL &&
                 decnet_identity_ensure(argv[1], &identity) == DECNET_OK &&
                 decnet_client_new_from_host_json(identity, host_ok, DECNET_HOSTNAME_ON, &client) ==
                     DECNET_OK &&
                 decnet_client_new_from_host_json(identity, host_nonjson, DECNET_HOSTNAME_ON,
                                                  &nonjson) == DECNET_OK;
    check(ready, "set-up (identity, clients)");
    if (!ready) {
        fprintf(stderr, "%s\n", decnet_last_error_message());
        return 1;
    }

    /* No callback: a call raises nothing. */
    check(decnet_get_log_level() == DECNET_LOG_OFF, "no callback at start");
    check(decnet_client_health(client, &answer) == DECNET_OK, "health without a callback");
    decnet_string_free(answer);
    answer = NULL;

    /* A fresh client's first call, at trace: the expected sequence. */
    decnet_client *fresh = NULL;
    decnet_client_new_from_host_json(identity, host_ok, DECNET_HOSTNAME_ON, &fresh);
    check(decnet_set_log_callback(DECNET_LOG_TRACE, record, &calls) == DECNET_OK, "set at trace");
    check(decnet_get_log_level() == DECNET_LOG_TRACE, "level reads back as trace");
    check(decnet_client_health(fresh, &answer) == DECNET_OK, "health with a callback");
    decnet_string_free(answer);
    answer = NULL;
    print_events();
    static const char *const first[] = {"request.sent", "connection.opened", "request.answered",
                                        "response.body", NULL};
    check(sequence_is(first), "first call: sent, opened, answered, body");
    check(g_count == 4 && g_levels[0] == DECNET_LOG_DEBUG && g_levels[1] == DECNET_LOG_INFO &&
              g_levels[2] == DECNET_LOG_INFO && g_levels[3] == DECNET_LOG_TRACE,
          "levels debug, info, info, trace");
    check(g_count == 4 && strstr(g_events[1], "\"handshake\":\"full\"") != NULL,
          "the first connection is a full handshake");
    /* The worker's fingerprint, as the host record pins it. */
    const char *pin = strstr(host_ok, "\"client_cert_fingerprint\"");
    char fingerprint[128] = "";
    if (pin != NULL && (pin = strchr(pin + 26, '"')) != NULL) {
        snprintf(fingerprint, sizeof fingerprint, "\"peer_fingerprint\":\"%.64s\"", pin + 1);
    }
    check(g_count == 4 && fingerprint[0] != '\0' && strstr(g_events[1], fingerprint) != NULL,
          "connection.opened names the pinned fingerprint");
    check(g_count == 4 && strstr(g_events[2], "\"path\":\"/health\"") != NULL &&
              strstr(g_events[2], "\"status\":200") != NULL,
          "request.answered names the path and status");
    check(calls == 4, "user_data reached the callback each time");
    forget_events();

    /* A POST on the pooled connection: its body at trace, the reuse. */
    const char *services[] = {"ssh"};
    check(decnet_client_mutate(fresh, "d1", services, 1, false, &answer) == DECNET_OK, "mutate");
    decnet_string_free(answer);
    answer = NULL;
    print_events();
    static const char *const second[] = {"request.sent", "request.body", "connection.reused",
                                         "request.answered", "response.body", NULL};
    check(sequence_is(second), "second call: sent, body, reused, answered, body");

    /* A failure, at error level: its kind. */
    forget_events();
    check(decnet_set_log_callback(DECNET_LOG_ERROR, record, &calls) == DECNET_OK, "set at error");
    check(decnet_client_health(nonjson, &answer) == DECNET_ERR_PROTOCOL, "non-JSON is protocol");
    print_events();
    check(g_count == 1 && is_event(0, "request.failed") &&
              strstr(g_events[0], "\"kind\":\"protocol\"") != NULL && g_levels[0] == DECNET_LOG_ERROR,
          "one request.failed of kind protocol");

    /* A level out of range keeps the callback. */
    check(decnet_set_log_callback(6, record, &calls) == DECNET_ERR_INVALID_ARGUMENT,
          "level 6 is rejected");
    check(decnet_get_log_level() == DECNET_LOG_ERROR, "the previous callback stays");

    /* Re-entrancy: the callback calls the library and replaces itself. */
    forget_events();
    g_client = client;
    check(decnet_set_log_callback(DECNET_LOG_INFO, reentrant, &calls) == DECNET_OK, "set re-entrant");
    check(decnet_client_health(client, &answer) == DECNET_OK, "health with a re-entrant callback");
    decnet_string_free(answer);
    answer = NULL;
    print_events();
    check(g_inner_result == DECNET_OK, "the call made inside the callback succeeded");
    check(g_inner_level == DECNET_LOG_INFO, "the level getter works inside the callback");
    check(g_count == 1 && is_event(0, "request.answered") &&
              strstr(g_events[0], "\"path\":\"/health\"") != NULL,
          "the inner call's events were dropped");
    forget_events();
    check(decnet_client_health(client, &answer) == DECNET_OK, "health after the replacement");
    decnet_string_free(answer);
    answer = NULL;
    check(g_count == 1 && is_event(0, "request.answered"), "the replacement callback receives");

    /* No key material in anything a whole session of calls raises. */
    forget_events();
    decnet_set_log_callback(DECNET_LOG_TRACE, record, &calls);
    decnet_client_connect(client);
    decnet_client_health(client, &answer);
    decnet_string_free(answer);
    answer = NULL;
    decnet_client_deploy(client, "{\"mode\":\"unihost\",\"deckies\":[{\"name\":\"d1\",\"services\":[\"ssh\"]}]}",
                         true, false, &answer);
    decnet_string_free(answer);
    answer = NULL;
    decnet_client_health(nonjson, &answer);
    check(g_count >= 6, "a session of calls raised events");
    check(!leaks(master_key), "no event carries the master key");
    check(!leaks(ca_key), "no event carries the CA key");

    /* Removed: nothing more arrives. */
    check(decnet_set_log_callback(DECNET_LOG_OFF, NULL, NULL) == DECNET_OK, "remove");
    check(decnet_get_log_level() == DECNET_LOG_OFF, "level reads back as off");
    int before = calls;
    decnet_client_health(client, &answer);
    decnet_string_free(answer);
    check(calls == before, "no event after removal");

    forget_events();
    decnet_client_free(fresh);
    decnet_client_free(client);
    decnet_client_free(nonjson);
    decnet_identity_free(identity);
    free(host_ok);
    free(host_nonjson);
    free(master_key);
    free(ca_key);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
