/* key_modes.c -- an unprotected key reaches C as DECNET_ERR_PKI with the fix.
 *
 *   key_modes CA_DIR
 *
 * Opens the master key to group and others, checks that loading the bundle
 * fails with DECNET_ERR_PKI and a message naming the mode and the fix, then
 * restores the key's mode and checks that the bundle loads again.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "decnet_agent_client.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: key_modes CA_DIR\n");
        return 2;
    }
    char master[4096], key[4200], fix[4300];
    snprintf(master, sizeof master, "%s/master", argv[1]);
    snprintf(key, sizeof key, "%s/worker.key", master);
    snprintf(fix, sizeof fix, "chmod 600 %s", key);
    struct decnet_identity *identity = NULL;
    int failures = 0;

    if (chmod(key, 0644) != 0) {
        perror(key);
        return 2;
    }
    decnet_result rc = decnet_identity_load_dir(master, &identity);
    const char *message = decnet_last_error_message();
    if (rc != DECNET_ERR_PKI || identity != NULL || strstr(message, "0644") == NULL ||
        strstr(message, fix) == NULL) {
        fprintf(stderr, "open key: expected DECNET_ERR_PKI naming 0644 and `%s`, got %d: %s\n",
                fix, (int)rc, message);
        failures++;
    } else {
        printf("refused: %s\n", message);
    }

    chmod(key, 0600);
    rc = decnet_identity_load_dir(master, &identity);
    if (rc != DECNET_OK) {
        fprintf(stderr, "restored key: %s\n", decnet_last_error_message());
        failures++;
    }
    decnet_identity_free(identity);
    printf("%d passed, %d failed\n", 2 - failures, failures);
    return failures == 0 ? 0 : 1;
}
