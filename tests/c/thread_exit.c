/* thread_exit.c -- the last-error functions called while a thread exits.
 *
 * A pthread key destructor runs after the thread's Rust thread-locals were
 * destroyed (glibc runs those first). A failing call and every
 * decnet_last_error_* getter made from there must neither abort nor crash:
 * the call still returns its code; the getters read an empty record.
 *
 *   thread_exit            (exit status 0 on success)
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "decnet_agent_client.h"

static pthread_key_t key;
static int late_result = -1;
static int late_message_empty = 0;
static int late_getters_empty = 0;

static void late_destructor(void *value) {
    (void)value;
    struct decnet_identity *identity = NULL;
    late_result = (int)decnet_identity_load_dir(NULL, &identity);
    const char *message = decnet_last_error_message();
    late_message_empty = message != NULL && message[0] == '\0';
    late_getters_empty = decnet_last_error_result() == DECNET_OK &&
                         decnet_last_error_http_status() == 0 &&
                         decnet_last_error_http_body() == NULL &&
                         decnet_last_error_expected_fingerprint() == NULL &&
                         decnet_last_error_actual_fingerprint() == NULL &&
                         !decnet_last_error_may_have_reached_worker() &&
                         decnet_last_error_update_error() == NULL &&
                         decnet_last_error_update_stderr() == NULL &&
                         decnet_last_error_rolled_back() == -1;
}

static void *thread_body(void *arg) {
    (void)arg;
    /* Fill this thread's record first, so its destructor is registered. */
    struct decnet_identity *identity = NULL;
    if (decnet_identity_load_dir(NULL, &identity) != DECNET_ERR_NULL_ARGUMENT ||
        strstr(decnet_last_error_message(), "dir") == NULL) {
        fprintf(stderr, "the first failing call was not recorded\n");
        return (void *)1;
    }
    pthread_setspecific(key, &key);
    return NULL;
}

int main(void) {
    if (pthread_key_create(&key, late_destructor) != 0) {
        return 2;
    }
    pthread_t thread;
    void *failed = NULL;
    if (pthread_create(&thread, NULL, thread_body, NULL) != 0 ||
        pthread_join(thread, &failed) != 0 || failed != NULL) {
        return 3;
    }
    printf("late call result %d, message empty %d, getters empty %d\n", late_result,
           late_message_empty, late_getters_empty);
    if (late_result != DECNET_ERR_NULL_ARGUMENT || !late_message_empty || !late_getters_empty) {
        fprintf(stderr, "a call during thread exit misbehaved\n");
        return 1;
    }
    printf("1 passed, 0 failed\n");
    return 0;
}
