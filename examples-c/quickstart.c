/*
 * quickstart.c -- drive one worker agent from C.
 *
 *   quickstart CA_DIR HOST_JSON_FILE
 *
 * Ensures the master identity in CA_DIR, makes a pinned client from the
 * host record in HOST_JSON_FILE, runs health, status, deploy and mutate,
 * then shows how errors are told apart: an HTTP 404 with its body, and a
 * pin mismatch with both fingerprints. Exits 0 when everything behaved as
 * the worker contract says.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <decnet_agent_client.h>

/* Prints the last failure on this thread. */
static void print_error(const char *what, decnet_result rc) {
    fprintf(stderr, "%s failed: %s (%d): %s\n", what, decnet_result_name((uint32_t)rc), (int)rc,
            decnet_last_error_message());
}

/* Reads a whole file into a NUL-terminated buffer the caller frees. */
static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return NULL;
    }
    char *text = NULL;
    size_t used = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        char *grown = realloc(text, used + n + 1);
        if (grown == NULL) {
            free(text);
            fclose(f);
            return NULL;
        }
        text = grown;
        memcpy(text + used, chunk, n);
        used += n;
    }
    fclose(f);
    if (text != NULL) {
        text[used] = '\0';
    }
    return text;
}

/* Prints one RPC's outcome and frees its result; returns 1 on success.
 * `json` is read only after the call that filled it has returned. */
static int show(const char *what, decnet_result rc, char **json) {
    if (rc != DECNET_OK) {
        print_error(what, rc);
        return 0;
    }
    printf("%-10s %s\n", what, *json);
    decnet_string_free(*json); /* every char** result is ours to free */
    *json = NULL;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CA_DIR HOST_JSON_FILE\n", argv[0]);
        return 2;
    }
    int ok = 1;
    decnet_identity *identity = NULL;
    decnet_client *client = NULL;
    char *host_json = read_file(argv[2]);
    if (host_json == NULL) {
        return 1;
    }

    printf("decnet-agent-client %s\n", decnet_version());
    decnet_result rc = decnet_identity_ensure(argv[1], &identity);
    if (rc != DECNET_OK) {
        print_error("identity", rc);
        free(host_json);
        return 1;
    }
    rc = decnet_client_new_from_host_json(identity, host_json, DECNET_HOSTNAME_ON, &client);
    /* The client keeps its own reference: the identity can go now. */
    decnet_identity_free(identity);
    if (rc != DECNET_OK) {
        print_error("client", rc);
        free(host_json);
        return 1;
    }

    char *text = NULL;
    if (decnet_client_describe(client, &text) == DECNET_OK) {
        printf("%s\n", text);
        decnet_string_free(text);
    }

    char *json = NULL;
    ok &= show("health", decnet_client_health(client, &json), &json);
    ok &= show("status", decnet_client_status(client, &json), &json);
    const char *config =
        "{\"mode\":\"unihost\",\"interface\":\"eth0\",\"subnet\":\"192.0.2.0/24\","
        "\"gateway\":\"192.0.2.1\",\"log_file\":null,\"ipvlan\":false,\"mutate_interval\":null,"
        "\"deckies\":[{\"name\":\"decky-01\",\"ip\":\"192.0.2.10\",\"services\":[\"ssh\"],"
        "\"distro\":\"debian\",\"base_image\":\"debian\",\"hostname\":\"files01\"}]}";
    ok &= show("deploy", decnet_client_deploy(client, config, false, false, &json), &json);
    const char *services[] = {"ssh", "http"};
    ok &= show("mutate", decnet_client_mutate(client, "decky-01", services, 2, false, &json), &json);

    /* An HTTP error: a dry-run mutate of a decky that does not exist. */
    json = NULL;
    rc = decnet_client_mutate(client, "no-such-decky", services, 2, true, &json);
    if (rc == DECNET_ERR_HTTP_STATUS && decnet_last_error_http_status() == 404) {
        printf("expected  HTTP %u, body %s\n", (unsigned)decnet_last_error_http_status(),
               decnet_last_error_http_body());
    } else {
        print_error("404 check", rc);
        decnet_string_free(json);
        ok = 0;
    }
    decnet_client_free(client);
    client = NULL;

    /* A pin mismatch: same worker, wrong fingerprint. */
    char *wrong = malloc(strlen(host_json) + 80);
    const char *pin = strstr(host_json, "\"client_cert_fingerprint\":\"");
    if (wrong != NULL && pin != NULL) {
        size_t head = (size_t)(pin - host_json) + strlen("\"client_cert_fingerprint\":\"");
        memcpy(wrong, host_json, head);
        memset(wrong + head, 'a', 64);
        strcpy(wrong + head + 64, pin + strlen("\"client_cert_fingerprint\":\"") + 64);
        decnet_identity *again = NULL;
        rc = decnet_identity_ensure(argv[1], &again);
        if (rc == DECNET_OK) {
            rc = decnet_client_new_from_host_json(again, wrong, DECNET_HOSTNAME_ON, &client);
            decnet_identity_free(again);
        }
        if (rc == DECNET_OK) {
            json = NULL;
            rc = decnet_client_health(client, &json);
            if (rc == DECNET_ERR_PIN_MISMATCH) {
                printf("expected  pin mismatch: expected %s, worker has %s\n",
                       decnet_last_error_expected_fingerprint(), decnet_last_error_actual_fingerprint());
            } else {
                print_error("pin check", rc);
                decnet_string_free(json);
                ok = 0;
            }
            decnet_client_free(client);
        } else {
            print_error("wrong-pin client", rc);
            ok = 0;
        }
    } else {
        fprintf(stderr, "host record has no pin\n");
        ok = 0;
    }
    free(wrong);
    free(host_json);
    printf("%s\n", ok ? "quickstart: all calls behaved as expected" : "quickstart: FAILED");
    return ok ? 0 : 1;
}
