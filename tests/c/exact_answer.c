/* exact_answer.c -- a worker's answer reaches C exactly as written.
 *
 *   exact_answer CA_DIR HOSTS_DIR
 *
 * The `oddkey` stand-in answers with object keys spelled
 * `$serde_json::private::Number` (plainly and \u-escaped), which
 * serde_json's arbitrary_precision mode would read as numbers. The JSON
 * text handed to C must keep them as keys; so must serde_json's
 * raw_value key, and long numbers their literals. Then a deploy config
 * holding the Number key is accepted from C on the `ok` worker.
 */
#include <stdio.h>
#include <string.h>

#include "decnet_agent_client.h"
#include "read_file.h"

static const char EXPECTED[] =
    "{\"$serde_json::private::Number\":\"1\",\"big\":123456789012345678901234567890,"
    "\"data\":{\"$serde_json::private::RawValue\":\"7\"},\"f\":0.10000000000000000000001,"
    "\"nested\":{\"$serde_json::private::Number\":true}}";

/* A deploy config from C: the Number token is an ordinary key, with a
 * number under it as well as a string (serde_json alone refuses the
 * first and turns the second into the number 12). */
static const char CONFIG[] =
    "{\"deckies\":[{\"name\":\"d1\",\"services\":[\"ssh\"]}],"
    "\"n\":{\"$serde_json::private::Number\":12},\"s\":{\"$serde_json::private::Number\":\"12\"}}";

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: exact_answer CA_DIR HOSTS_DIR\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/oddkey.json", argv[2]);
    char *host = read_file(path);
    struct decnet_identity *identity = NULL;
    struct decnet_client *client = NULL;
    char *answer = NULL;
    int ok = host != NULL && decnet_identity_ensure(argv[1], &identity) == DECNET_OK &&
             decnet_client_new_from_host_json(identity, host, DECNET_HOSTNAME_ON, &client) ==
                 DECNET_OK &&
             decnet_client_health(client, &answer) == DECNET_OK;
    if (!ok) {
        fprintf(stderr, "call failed: %s\n", decnet_last_error_message());
    } else if (strcmp(answer, EXPECTED) != 0) {
        fprintf(stderr, "answer changed:\n  got      %s\n  expected %s\n", answer, EXPECTED);
        ok = 0;
    } else {
        printf("answer kept exactly: %s\n", answer);
    }
    decnet_string_free(answer);
    answer = NULL;
    if (ok) {
        struct decnet_client *deployer = NULL;
        snprintf(path, sizeof path, "%s/ok.json", argv[2]);
        char *ok_host = read_file(path);
        ok = ok_host != NULL &&
             decnet_client_new_from_host_json(identity, ok_host, DECNET_HOSTNAME_ON, &deployer) ==
                 DECNET_OK &&
             decnet_client_deploy(deployer, CONFIG, false, false, &answer) == DECNET_OK;
        if (!ok) {
            fprintf(stderr, "deploy of a config keyed like the Number token failed: %s\n",
                    decnet_last_error_message());
        } else {
            printf("config keyed like the Number token deployed: %s\n", answer);
        }
        decnet_string_free(answer);
        decnet_client_free(deployer);
        free(ok_host);
    }
    decnet_client_free(client);
    decnet_identity_free(identity);
    free(host);
    printf(ok ? "1 passed, 0 failed\n" : "0 passed, 1 failed\n");
    return ok ? 0 : 1;
}
