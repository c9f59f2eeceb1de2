/*
 * threads.c -- one client shared by 8 threads.
 *
 *   threads CA_DIR HOSTS_DIR [CALLS_PER_THREAD]   (default 1000)
 *
 * Makes one client for the `ok` stand-in worker (HOSTS_DIR/ok.json) and
 * starts 8 threads that, released together by a barrier, each make
 * CALLS_PER_THREAD calls on it: health and status alternately, with a
 * describe and a timeouts read every 50 calls and, on thread 0, a
 * timeouts write (same values) every 100 -- so the pool, the TLS session
 * and the profile lock are all shared under contention. Every call must
 * succeed and return the expected JSON; each thread also checks that its
 * last-error record is its own. Each call is one check.
 *
 * Built with -fsanitize=thread by run.sh (the C side is instrumented; the
 * Rust library is not, see tsan.supp). Prints "N passed, M failed" alone
 * on the last line; exits 1 on any failure.
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

#define THREADS 8

static pthread_barrier_t g_start;
static pthread_barrier_t g_failed_all;

#ifdef THREADS_TSAN_SELFTEST
/* A deliberate data race (run.sh's negative control): with tsan.supp in
 * force, TSan must still report races between the C code's own accesses. */
static long g_unsynchronised;
#endif

struct worker {
    const decnet_client *client; /* shared, read-only handle */
    int index;
    long calls;
    long passed; /* written by this thread only, read after join */
    long failed;
    char first_failure[512];
};

static void fail(struct worker *w, const char *what, decnet_result rc) {
    w->failed++;
    if (w->first_failure[0] == '\0') {
        snprintf(w->first_failure, sizeof w->first_failure, "thread %d: %s: %s: %s", w->index, what,
                 decnet_result_name((uint32_t)rc), decnet_last_error_message());
    }
}

/* Checks one RPC's outcome; `*json` is read only after the call returned
 * (the order of a function's argument evaluations is unspecified). */
static void check_rpc(struct worker *w, const char *what, decnet_result rc, char **json, const char *expect) {
    if (rc == DECNET_OK && *json != NULL && strstr(*json, expect) != NULL) {
        w->passed++;
    } else {
        fail(w, what, rc);
    }
    decnet_string_free(*json);
    *json = NULL;
}

static void *run(void *arg) {
    struct worker *w = arg;
    pthread_barrier_wait(&g_start);
    for (long i = 0; i < w->calls; i++) {
        char *json = NULL;
#ifdef THREADS_TSAN_SELFTEST
        g_unsynchronised++;
#endif
        if (i % 2 == 0) {
            decnet_result rc = decnet_client_health(w->client, &json);
            check_rpc(w, "health", rc, &json, "\"status\":\"ok\"");
        } else {
            decnet_result rc = decnet_client_status(w->client, &json);
            check_rpc(w, "status", rc, &json, "\"deployed\"");
        }
        if (i % 50 == 0) {
            char *text = NULL;
            decnet_result rc = decnet_client_describe(w->client, &text);
            check_rpc(w, "describe", rc, &text, "AgentClient(");
            decnet_timeouts t;
            rc = decnet_client_get_timeouts(w->client, DECNET_PROFILE_CONTROL, &t);
            if (rc == DECNET_OK && t.connect_ms == 5000 && t.read_ms == 15000) {
                w->passed++;
            } else {
                fail(w, "get_timeouts", rc);
            }
            if (w->index == 0 && i % 100 == 0) {
                rc = decnet_client_set_timeouts(w->client, DECNET_PROFILE_CONTROL, &t);
                if (rc == DECNET_OK) {
                    w->passed++;
                } else {
                    fail(w, "set_timeouts", rc);
                }
            }
        }
    }
    /* The last-error record is per thread: every thread fails with its own
     * path, waits until all have failed, then reads its own record back. */
    char path[64];
    snprintf(path, sizeof path, "/nonexistent/decnet-thread-%d.crt", w->index);
    char *out = NULL;
    decnet_result rc = decnet_fingerprint_file(path, &out);
    pthread_barrier_wait(&g_failed_all);
    if (rc == DECNET_ERR_IO && decnet_last_error_result() == DECNET_ERR_IO &&
        strstr(decnet_last_error_message(), path) != NULL && out == NULL) {
        w->passed++;
    } else {
        fail(w, "per-thread last error", rc);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s CA_DIR HOSTS_DIR [CALLS_PER_THREAD]\n", argv[0]);
        return 2;
    }
    long calls = 1000;
    if (argc == 4) {
        char *end;
        calls = strtol(argv[3], &end, 10);
        if (*end != '\0' || calls < 1) {
            fprintf(stderr, "CALLS_PER_THREAD must be a positive integer\n");
            return 2;
        }
    }
    char host_path[4096];
    snprintf(host_path, sizeof host_path, "%s/ok.json", argv[2]);
    char *host_json = read_file(host_path);
    if (host_json == NULL) {
        perror(host_path);
        printf("0 passed, 1 failed\n");
        return 1;
    }

    long passed = 0, failed = 0;
    decnet_identity *identity = NULL;
    decnet_client *client = NULL;
    decnet_result rc = decnet_identity_ensure(argv[1], &identity);
    if (rc == DECNET_OK) {
        rc = decnet_client_new_from_host_json(identity, host_json, DECNET_HOSTNAME_ON, &client);
        decnet_identity_free(identity);
    }
    free(host_json);
    if (rc != DECNET_OK) {
        fprintf(stderr, "setup: %s: %s\n", decnet_result_name((uint32_t)rc), decnet_last_error_message());
        printf("0 passed, 1 failed\n");
        return 1;
    }

    struct worker workers[THREADS];
    pthread_t ids[THREADS];
    int started = 0;
    pthread_barrier_init(&g_start, NULL, THREADS);
    pthread_barrier_init(&g_failed_all, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){.client = client, .index = i, .calls = calls};
        if (pthread_create(&ids[i], NULL, run, &workers[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            break; /* the barrier never opens: abort below */
        }
        started++;
    }
    if (started != THREADS) {
        printf("0 passed, 1 failed\n");
        return 1; /* threads wait on the barrier forever; exit ends them */
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(ids[i], NULL);
        passed += workers[i].passed;
        failed += workers[i].failed;
        if (workers[i].first_failure[0] != '\0') {
            fprintf(stderr, "FAIL %s (%ld failures in this thread)\n", workers[i].first_failure, workers[i].failed);
        }
    }
    pthread_barrier_destroy(&g_start);
    pthread_barrier_destroy(&g_failed_all);
    decnet_client_free(client);
    printf("%d threads x %ld calls on one client\n", THREADS, calls);
    printf("%ld passed, %ld failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
