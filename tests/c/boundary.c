/*
 * boundary.c -- the C ABI's contract, checked from C.
 *
 *   boundary CA_DIR HOSTS_DIR
 *
 * CA_DIR is the stand-in worker's CA directory (DIR/ca), HOSTS_DIR its host
 * records (DIR/hosts/{ok,close,stall,nonjson}.json). Environment:
 *
 *   BOUNDARY_COVERAGE  file listing what the header requires to be tested,
 *                      one "KIND FUNCTION ARGUMENT" per line (run.sh writes it
 *                      from the installed header). KIND is `call` (every
 *                      function is called), `null` (every pointer argument is
 *                      passed NULL), `utf8` (every string argument gets
 *                      invalid UTF-8), `json` (every *_json argument gets
 *                      malformed JSON) or `range` (every enum-valued integer
 *                      gets an out-of-range value). A key this file never
 *                      recorded is a failure, so a new function or argument
 *                      cannot go untested. Unset: one failed check.
 *   DECNET_EXPECTED_VERSION  when set, decnet_version() must equal it.
 *
 * Covers: NULL in every pointer argument (and the documented NULLs that are
 * allowed), invalid UTF-8, malformed JSON and out-of-range enums; every
 * result code reachable from C with its detail; the successful paths of
 * every function; an identity freed while its client is in use; the
 * per-thread last-error record. Everything received is freed, so valgrind
 * and LeakSanitizer see no leaks.
 *
 * Result codes not provoked here, by design:
 *  - DECNET_ERR_INTERNAL: a bug inside the library (a failing random source,
 *    a ureq error the mapping does not know); nothing a caller passes can
 *    cause it.
 *  - DECNET_ERR_PANIC: a caught Rust panic; no input is meant to panic.
 * Faking them (e.g. a crafted worker answer that happens to trip a bug)
 * would test the bug, not the boundary; only their names are checked.
 *
 * Prints one line per failure on stderr, and "N passed, M failed" alone on
 * the last line of stdout. Exits 1 on any failure.
 */
#define _XOPEN_SOURCE 700

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <decnet_agent_client.h>

#include "read_file.h"

/* ------------------------------------------------------------------ */
/* Harness                                                            */
/* ------------------------------------------------------------------ */

static int g_passed;
static int g_failed;

static void check_at(bool ok, const char *what, int line) {
    if (ok) {
        g_passed++;
        return;
    }
    g_failed++;
    fprintf(stderr, "FAIL (boundary.c:%d) %s\n     last error: %s: %s\n", line, what,
            decnet_result_name((uint32_t)decnet_last_error_result()), decnet_last_error_message());
}
#define CHECK(cond, what) check_at((cond) ? true : false, (what), __LINE__)

/* printf into one of a few rotating buffers: labels for checks. */
__attribute__((format(printf, 1, 2))) static const char *fmt(const char *format, ...) {
    static char buffers[64][512];
    static unsigned next;
    char *buffer = buffers[next++ % 64];
    va_list ap;
    va_start(ap, format);
    vsnprintf(buffer, sizeof buffers[0], format, ap);
    va_end(ap);
    return buffer;
}

static const char *name_of(decnet_result rc) { return decnet_result_name((uint32_t)rc); }

/* What this run has covered: "KIND FUNCTION ARGUMENT" keys. */
#define MAX_KEYS 1024
static char *g_keys[MAX_KEYS];
static size_t g_key_count;

static void cover(const char *kind, const char *function, const char *argument) {
    char key[256];
    snprintf(key, sizeof key, "%s %s %s", kind, function, argument ? argument : "-");
    for (size_t i = 0; i < g_key_count; i++) {
        if (strcmp(g_keys[i], key) == 0) {
            return;
        }
    }
    if (g_key_count < MAX_KEYS) {
        g_keys[g_key_count] = malloc(strlen(key) + 1);
        if (g_keys[g_key_count] != NULL) {
            strcpy(g_keys[g_key_count++], key);
        }
    }
}

static bool covered(const char *key) {
    for (size_t i = 0; i < g_key_count; i++) {
        if (strcmp(g_keys[i], key) == 0) {
            return true;
        }
    }
    return false;
}

/* A pointer that is neither NULL nor anything the library made: an
 * out-parameter pre-filled with it must come back NULL after a failure. */
static char g_sentinel_byte;
#define SENTINEL ((void *)&g_sentinel_byte)

/* Invalid UTF-8. */
static const char BAD_UTF8[] = "\xff\xfe";

static bool message_names(const char *argument) {
    char quoted[128];
    snprintf(quoted, sizeof quoted, "`%s`", argument);
    return strstr(decnet_last_error_message(), quoted) != NULL;
}

static bool message_has(const char *text) { return strstr(decnet_last_error_message(), text) != NULL; }

/* Result codes this run has provoked (and seen come back) from C. */
static bool g_seen[15];

/* The call returned `want`, the last-error record agrees, and the message
 * names `argument` when one is given. */
static void expect_error(const char *context, decnet_result rc, decnet_result want,
                         const char *argument) {
    if (rc == want && (unsigned)want < 15) {
        g_seen[want] = true;
    }
    CHECK(rc == want, fmt("%s: returns %s (got %s)", context, name_of(want), name_of(rc)));
    CHECK(decnet_last_error_result() == want,
          fmt("%s: decnet_last_error_result() is %s", context, name_of(want)));
    const char *message = decnet_last_error_message();
    CHECK(message != NULL && message[0] != '\0', fmt("%s: has a message", context));
    if (argument != NULL) {
        CHECK(message_names(argument), fmt("%s: message names `%s`", context, argument));
    }
}

static void expect_ok(const char *context, decnet_result rc) {
    CHECK(rc == DECNET_OK, fmt("%s: returns ok (got %s)", context, name_of(rc)));
}

/* NULL in `argument` of `function`: DECNET_ERR_NULL_ARGUMENT naming it, the
 * out-parameter (if any) cleared. */
static void expect_null(const char *function, const char *argument, decnet_result rc,
                        bool out_cleared) {
    cover("null", function, argument);
    const char *context = fmt("%s(%s=NULL)", function, argument);
    expect_error(context, rc, DECNET_ERR_NULL_ARGUMENT, argument);
    CHECK(message_has("must not be NULL"), fmt("%s: message says NULL", context));
    CHECK(out_cleared, fmt("%s: out-parameter left NULL", context));
}

/* Invalid UTF-8 in `argument`. */
static void expect_utf8(const char *function, const char *argument, decnet_result rc,
                        bool out_cleared) {
    cover("utf8", function, argument);
    const char *context = fmt("%s(%s=\"\\xff\\xfe\")", function, argument);
    expect_error(context, rc, DECNET_ERR_INVALID_ARGUMENT, argument);
    CHECK(message_has("UTF-8"), fmt("%s: message says UTF-8", context));
    CHECK(out_cleared, fmt("%s: out-parameter left NULL", context));
}

/* Malformed JSON in `argument`; `named` is the name the message uses. */
static void expect_bad_json(const char *function, const char *argument, const char *named,
                            decnet_result rc, bool out_cleared) {
    cover("json", function, argument);
    const char *context = fmt("%s(%s=malformed JSON)", function, argument);
    expect_error(context, rc, DECNET_ERR_INVALID_ARGUMENT, named);
    CHECK(out_cleared, fmt("%s: out-parameter left NULL", context));
}

/* A string argument documented as accepting NULL, passed NULL. */
static void expect_null_allowed(const char *function, const char *argument, decnet_result rc) {
    cover("null", function, argument);
    expect_ok(fmt("%s(%s=NULL) is allowed", function, argument), rc);
}

/* The macros run the call first and only then evaluate `cleared` (which
 * reads the out-parameter the call may have written): in a plain function
 * call the order of argument evaluation is unspecified. */
#define EXPECT_NULL(function, argument, call, cleared)                \
    do {                                                              \
        decnet_result rc_ = (call);                                   \
        expect_null((function), (argument), rc_, (cleared));          \
    } while (0)
#define EXPECT_UTF8(function, argument, call, cleared)                \
    do {                                                              \
        decnet_result rc_ = (call);                                   \
        expect_utf8((function), (argument), rc_, (cleared));          \
    } while (0)
#define EXPECT_BAD_JSON(function, argument, named, call, cleared)     \
    do {                                                              \
        decnet_result rc_ = (call);                                   \
        expect_bad_json((function), (argument), (named), rc_, (cleared)); \
    } while (0)

/* ------------------------------------------------------------------ */
/* Files and small helpers                                            */
/* ------------------------------------------------------------------ */

static bool write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        return false;
    }
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static bool copy_file(const char *from, const char *to) {
    char *text = read_file(from);
    bool ok = text != NULL && write_file(to, text);
    free(text);
    return ok;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int file_mode(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* The string value of "key" in a flat JSON object, copied into `out`. */
static bool json_string(const char *json, const char *key, char *out, size_t cap) {
    char quoted[128];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    const char *p = json != NULL ? strstr(json, quoted) : NULL;
    if (p == NULL) {
        return false;
    }
    p += strlen(quoted);
    while (*p == ' ' || *p == ':') {
        p++;
    }
    if (*p != '"') {
        return false;
    }
    p++;
    const char *end = strchr(p, '"');
    if (end == NULL || (size_t)(end - p) >= cap) {
        return false;
    }
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
    return true;
}

/* The integer value of "key" in a flat JSON object; -1 if absent. */
static long json_number(const char *json, const char *key) {
    char quoted[128];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    const char *p = json != NULL ? strstr(json, quoted) : NULL;
    if (p == NULL) {
        return -1;
    }
    p += strlen(quoted);
    while (*p == ' ' || *p == ':') {
        p++;
    }
    char *end;
    long value = strtol(p, &end, 10);
    return end == p ? -1 : value;
}

static bool contains(const char *haystack, const char *needle) {
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

static bool is_hex64(const char *s) {
    if (s == NULL || strlen(s) != 64) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return false;
        }
    }
    return true;
}

static bool same(const char *a, const char *b) { return a != NULL && b != NULL && strcmp(a, b) == 0; }

/* A TCP port on 127.0.0.1 nothing listens on (bound, then released). */
static unsigned short closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    unsigned short port = 1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0) {
        port = ntohs(addr.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* Shared state                                                       */
/* ------------------------------------------------------------------ */

static const char *g_ca_dir;   /* the stand-in's CA directory */
static char g_tmp[512];        /* this run's scratch directory */
static char *g_host_ok;        /* host records */
static char *g_host_close;
static char *g_host_stall;
static char *g_host_nonjson;
static char g_ok_address[64];
static unsigned short g_ok_port;
static char g_ok_pin[65];

/* printf into memory that lives until the end of the run (freed by
 * free_kept): for paths and strings held across other fmt() calls. */
#define MAX_KEPT 256
static char *g_kept[MAX_KEPT];
static size_t g_kept_count;

__attribute__((format(printf, 1, 2))) static const char *keepf(const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(NULL, 0, format, ap);
    va_end(ap);
    char *text = malloc((size_t)n + 1);
    if (text == NULL || g_kept_count == MAX_KEPT) {
        fprintf(stderr, "boundary: out of memory\n");
        exit(2);
    }
    va_start(ap, format);
    vsnprintf(text, (size_t)n + 1, format, ap);
    va_end(ap);
    g_kept[g_kept_count++] = text;
    return text;
}

static void free_kept(void) {
    for (size_t i = 0; i < g_kept_count; i++) {
        free(g_kept[i]);
    }
    g_kept_count = 0;
}

static const char *path_in(const char *dir, const char *name) { return keepf("%s/%s", dir, name); }

static const char DEPLOY_CONFIG[] =
    "{\"mode\":\"unihost\",\"interface\":\"eth0\",\"subnet\":\"192.0.2.0/24\","
    "\"gateway\":\"192.0.2.1\",\"log_file\":null,\"ipvlan\":false,\"mutate_interval\":null,"
    "\"deckies\":[{\"name\":\"decky-01\",\"ip\":\"192.0.2.10\",\"services\":[\"ssh\"],"
    "\"distro\":\"debian\",\"base_image\":\"debian\",\"hostname\":\"files01\"}]}";
static const char EMPTY_TOPOLOGY_HASH[] =
    "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/* ------------------------------------------------------------------ */
/* Tests                                                              */
/* ------------------------------------------------------------------ */

/* Before any failure on a thread the record is empty. Called first. */
static void test_fresh_last_error(void) {
    cover("call", "decnet_last_error_result", NULL);
    cover("call", "decnet_last_error_message", NULL);
    cover("call", "decnet_last_error_http_status", NULL);
    cover("call", "decnet_last_error_http_body", NULL);
    cover("call", "decnet_last_error_expected_fingerprint", NULL);
    cover("call", "decnet_last_error_actual_fingerprint", NULL);
    cover("call", "decnet_last_error_may_have_reached_worker", NULL);
    cover("call", "decnet_last_error_timeout_phase", NULL);
    CHECK(decnet_last_error_result() == DECNET_OK, "fresh thread: last error result is ok");
    const char *message = decnet_last_error_message();
    CHECK(message != NULL && message[0] == '\0', "fresh thread: last error message is \"\"");
    CHECK(decnet_last_error_http_status() == 0, "fresh thread: http status 0");
    CHECK(decnet_last_error_http_body() == NULL, "fresh thread: http body NULL");
    CHECK(decnet_last_error_expected_fingerprint() == NULL, "fresh thread: expected fp NULL");
    CHECK(decnet_last_error_actual_fingerprint() == NULL, "fresh thread: actual fp NULL");
    CHECK(!decnet_last_error_may_have_reached_worker(), "fresh thread: may_have_reached false");
    CHECK(decnet_last_error_timeout_phase() == DECNET_TIMEOUT_PHASE_NONE, "fresh thread: timeout phase NONE");
}

static void test_version_and_names(void) {
    cover("call", "decnet_version", NULL);
    const char *version = decnet_version();
    CHECK(version != NULL && version[0] >= '0' && version[0] <= '9' && strchr(version, '.') != NULL,
          fmt("decnet_version() looks like a version (\"%s\")", version ? version : "(null)"));
    CHECK(decnet_version() == version, "decnet_version() is one static string");
    const char *expected = getenv("DECNET_EXPECTED_VERSION");
    if (expected != NULL && expected[0] != '\0') {
        CHECK(same(version, expected), fmt("decnet_version() equals %s", expected));
    }

    cover("call", "decnet_result_name", NULL);
    static const char *const names[] = {
        "ok",           "invalid_argument", "io",       "pki",           "not_enrolled",
        "connect",      "tls",              "pin_mismatch", "timeout",   "http_status",
        "protocol",     "connection_lost",  "internal", "null_argument", "panic",
    };
    for (uint32_t code = 0; code <= 14; code++) {
        CHECK(same(decnet_result_name(code), names[code]),
              fmt("decnet_result_name(%u) is \"%s\" (got \"%s\")", (unsigned)code, names[code],
                  decnet_result_name(code)));
    }
    CHECK(same(decnet_result_name(15), "unknown"), "decnet_result_name(15) is \"unknown\"");
    CHECK(same(decnet_result_name(999), "unknown"), "decnet_result_name(999) is \"unknown\"");
    CHECK(same(decnet_result_name(UINT32_MAX), "unknown"), "decnet_result_name(UINT32_MAX) is \"unknown\"");
    CHECK(decnet_result_name(7) == decnet_result_name(7), "decnet_result_name returns static strings");
}

/* The log callback: NULL user_data is fine, a level above 5 is rejected
 * naming min_level and keeps the callback, NULL or level 0 removes it.
 * (tests/c/log_events.c checks the events themselves.) */
static void log_nothing(uint32_t level, const char *event_json, void *user_data) {
    (void)level;
    (void)event_json;
    (void)user_data;
}

static void test_log_callback(void) {
    cover("call", "decnet_set_log_callback", NULL);
    cover("call", "decnet_get_log_level", NULL);
    CHECK(decnet_get_log_level() == DECNET_LOG_OFF, "no log callback at start");
    expect_null_allowed("decnet_set_log_callback", "user_data",
                        decnet_set_log_callback(DECNET_LOG_WARN, log_nothing, NULL));
    CHECK(decnet_get_log_level() == DECNET_LOG_WARN, "decnet_get_log_level reads the level back");
    expect_error("decnet_set_log_callback(min_level=6)", decnet_set_log_callback(6, log_nothing, NULL),
                 DECNET_ERR_INVALID_ARGUMENT, "min_level");
    expect_error("decnet_set_log_callback(min_level=UINT32_MAX)",
                 decnet_set_log_callback(UINT32_MAX, log_nothing, NULL), DECNET_ERR_INVALID_ARGUMENT,
                 "min_level");
    CHECK(decnet_get_log_level() == DECNET_LOG_WARN, "a rejected level keeps the callback");
    expect_ok("decnet_set_log_callback(callback=NULL) removes it",
              decnet_set_log_callback(DECNET_LOG_TRACE, NULL, NULL));
    CHECK(decnet_get_log_level() == DECNET_LOG_OFF, "a NULL callback removes it");
    expect_ok("decnet_set_log_callback(min_level=0)", decnet_set_log_callback(DECNET_LOG_INFO, log_nothing, NULL));
    expect_ok("decnet_set_log_callback(min_level=0) removes it",
              decnet_set_log_callback(DECNET_LOG_OFF, log_nothing, NULL));
    CHECK(decnet_get_log_level() == DECNET_LOG_OFF, "level 0 removes it");
}

/* The free functions accept NULL and leave the last-error record alone. */
static void test_free_null(void) {
    char *out = SENTINEL;
    decnet_result rc = decnet_topology_hash(NULL, &out); /* a known last error */
    (void)rc;
    decnet_string_free(NULL);
    cover("null", "decnet_string_free", "s");
    cover("call", "decnet_string_free", NULL);
    decnet_client_free(NULL);
    cover("null", "decnet_client_free", "client");
    cover("call", "decnet_client_free", NULL);
    decnet_identity_free(NULL);
    cover("null", "decnet_identity_free", "identity");
    cover("call", "decnet_identity_free", NULL);
    CHECK(decnet_last_error_result() == DECNET_ERR_NULL_ARGUMENT && message_names("hydrated_json"),
          "free(NULL) x3: no-ops that leave the last error alone");
}

static void test_identity(void) {
    char *fp = NULL;
    char *file_fp = NULL;
    decnet_identity *identity = NULL;
    decnet_result rc;
    const char *master = path_in(g_ca_dir, "master");
    char ca_crt[600], worker_crt[600], worker_key[600];
    snprintf(ca_crt, sizeof ca_crt, "%s/ca.crt", master);
    snprintf(worker_crt, sizeof worker_crt, "%s/worker.crt", master);
    snprintf(worker_key, sizeof worker_key, "%s/worker.key", master);

    /* decnet_identity_ensure */
    cover("call", "decnet_identity_ensure", NULL);
    rc = decnet_identity_ensure(g_ca_dir, &identity);
    expect_ok("decnet_identity_ensure(CA_DIR)", rc);
    rc = decnet_fingerprint_file(worker_crt, &file_fp);
    expect_ok("decnet_fingerprint_file(master/worker.crt)", rc);
    CHECK(is_hex64(file_fp), "fingerprint_file: 64 lowercase hex");
    cover("call", "decnet_identity_fingerprint", NULL);
    rc = decnet_identity_fingerprint(identity, &fp);
    expect_ok("decnet_identity_fingerprint(ensured)", rc);
    CHECK(same(fp, file_fp), "ensured identity fingerprint == fingerprint_file(master/worker.crt)");
    decnet_string_free(fp);
    fp = NULL;

    {
        /* Ensuring an existing CA dir again loads the same identity. */
        decnet_identity *again = NULL;
        char *again_fp = NULL;
        rc = decnet_identity_ensure(g_ca_dir, &again);
        expect_ok("decnet_identity_ensure(CA_DIR) again", rc);
        if (rc == DECNET_OK) {
            decnet_identity_fingerprint(again, &again_fp);
        }
        CHECK(same(again_fp, file_fp), "ensure is idempotent: same master certificate");
        decnet_string_free(again_fp);
        decnet_identity_free(again);
    }

    /* NULL ca_dir: $HOME/.decnet/ca (HOME is this run's scratch dir). */
    {
        decnet_identity *by_default = NULL;
        rc = decnet_identity_ensure(NULL, &by_default);
        expect_null_allowed("decnet_identity_ensure", "ca_dir", rc);
        const char *home_ca = keepf("%s/home/.decnet/ca/master/worker.crt", g_tmp);
        CHECK(exists(home_ca), "decnet_identity_ensure(NULL) created $HOME/.decnet/ca/master");
        char *a = NULL, *b = NULL;
        expect_ok("fingerprint of the default identity", decnet_identity_fingerprint(by_default, &a));
        expect_ok("fingerprint_file of $HOME/.decnet/ca/master/worker.crt",
                  decnet_fingerprint_file(home_ca, &b));
        CHECK(same(a, b), "default identity is the one in $HOME/.decnet/ca");
        decnet_string_free(a);
        decnet_string_free(b);
        decnet_identity_free(by_default);
    }
    /* HOME unset and no ca_dir: invalid argument naming ca_dir. */
    {
        char *home = getenv("HOME");
        char saved[600];
        snprintf(saved, sizeof saved, "%s", home ? home : "");
        unsetenv("HOME");
        decnet_identity *none = SENTINEL;
        rc = decnet_identity_ensure(NULL, &none);
        expect_error("decnet_identity_ensure(NULL) without HOME", rc, DECNET_ERR_INVALID_ARGUMENT,
                     "ca_dir");
        CHECK(none == NULL, "decnet_identity_ensure(NULL) without HOME: out left NULL");
        char *fp_none = SENTINEL;
        rc = decnet_pki_ensure_ca(NULL, &fp_none);
        expect_error("decnet_pki_ensure_ca(NULL) without HOME", rc, DECNET_ERR_INVALID_ARGUMENT,
                     "ca_dir");
        CHECK(fp_none == NULL, "decnet_pki_ensure_ca(NULL) without HOME: out left NULL");
        setenv("HOME", saved, 1);
    }
    {
        decnet_identity *out = SENTINEL;
        EXPECT_NULL("decnet_identity_ensure", "out", decnet_identity_ensure(g_ca_dir, NULL), true);
        EXPECT_UTF8("decnet_identity_ensure", "ca_dir", decnet_identity_ensure(BAD_UTF8, &out),
                    out == NULL);
    }
    /* decnet_identity_ensure re-issues a master bundle with a missing file. */
    {
        const char *dir = path_in(g_tmp, "reissue-ca");
        decnet_identity *first = NULL, *second = NULL;
        char *a = NULL, *b = NULL;
        expect_ok("decnet_identity_ensure(fresh dir)", decnet_identity_ensure(dir, &first));
        remove(fmt("%s/master/worker.key", dir));
        rc = decnet_identity_ensure(dir, &second);
        expect_ok("decnet_identity_ensure with master/worker.key missing re-issues (no NOT_ENROLLED)", rc);
        if (rc == DECNET_OK) {
            decnet_identity_fingerprint(first, &a);
            decnet_identity_fingerprint(second, &b);
            CHECK(a && b && !same(a, b), "the re-issued master certificate is a new one");
        }
        decnet_string_free(a);
        decnet_string_free(b);
        decnet_identity_free(first);
        decnet_identity_free(second);
        /* Half a CA: PKI, nothing touched. */
        const char *half = path_in(g_tmp, "half-ca");
        mkdir(half, 0700);
        copy_file(fmt("%s/ca.crt", g_ca_dir), fmt("%s/ca.crt", half));
        decnet_identity *none = SENTINEL;
        rc = decnet_identity_ensure(half, &none);
        expect_error("decnet_identity_ensure(dir with ca.crt but no ca.key)", rc, DECNET_ERR_PKI, NULL);
        CHECK(none == NULL, "half CA: out left NULL");
        CHECK(!exists(fmt("%s/ca.key", half)) && !exists(fmt("%s/master", half)),
              "half CA: nothing created");
    }

    /* decnet_identity_load_dir: loads a bundle directory, creates nothing. */
    cover("call", "decnet_identity_load_dir", NULL);
    {
        const char *master_dir = fmt("%s/master", g_ca_dir);
        decnet_identity *loaded = NULL;
        char *loaded_fp = NULL;
        rc = decnet_identity_load_dir(master_dir, &loaded);
        expect_ok("decnet_identity_load_dir(master)", rc);
        expect_ok("decnet_identity_fingerprint(loaded from dir)", decnet_identity_fingerprint(loaded, &loaded_fp));
        CHECK(same(loaded_fp, file_fp), "identity loaded from master/ == fingerprint_file(master/worker.crt)");
        decnet_string_free(loaded_fp);
        decnet_identity_free(loaded);

        decnet_identity *out = SENTINEL;
        EXPECT_NULL("decnet_identity_load_dir", "dir", decnet_identity_load_dir(NULL, &out), out == NULL);
        EXPECT_NULL("decnet_identity_load_dir", "out", decnet_identity_load_dir(master_dir, NULL), true);
        out = SENTINEL;
        EXPECT_UTF8("decnet_identity_load_dir", "dir", decnet_identity_load_dir(BAD_UTF8, &out), out == NULL);
        const char *empty = path_in(g_tmp, "not-enrolled");
        mkdir(empty, 0700);
        out = SENTINEL;
        rc = decnet_identity_load_dir(empty, &out);
        expect_error("decnet_identity_load_dir(empty dir)", rc, DECNET_ERR_NOT_ENROLLED, NULL);
        CHECK(out == NULL && message_has("not enrolled") && message_has("ca.crt"),
              "not enrolled: the message names the missing file, out left NULL");
    }

    /* decnet_identity_load */
    cover("call", "decnet_identity_load", NULL);
    {
        decnet_identity *loaded = NULL;
        rc = decnet_identity_load(ca_crt, worker_crt, worker_key, &loaded);
        expect_ok("decnet_identity_load(master/{ca.crt,worker.crt,worker.key})", rc);
        rc = decnet_identity_fingerprint(loaded, &fp);
        expect_ok("decnet_identity_fingerprint(loaded)", rc);
        CHECK(same(fp, file_fp), "loaded identity fingerprint == fingerprint_file(master/worker.crt)");
        decnet_string_free(fp);
        fp = NULL;
        decnet_identity_free(loaded);

        decnet_identity *out = SENTINEL;
        EXPECT_NULL("decnet_identity_load", "ca_cert_path",
                    decnet_identity_load(NULL, worker_crt, worker_key, &out), out == NULL);
        out = SENTINEL;
        EXPECT_NULL("decnet_identity_load", "cert_path",
                    decnet_identity_load(ca_crt, NULL, worker_key, &out), out == NULL);
        out = SENTINEL;
        EXPECT_NULL("decnet_identity_load", "key_path",
                    decnet_identity_load(ca_crt, worker_crt, NULL, &out), out == NULL);
        EXPECT_NULL("decnet_identity_load", "out",
                    decnet_identity_load(ca_crt, worker_crt, worker_key, NULL), true);
        out = SENTINEL;
        EXPECT_UTF8("decnet_identity_load", "ca_cert_path",
                    decnet_identity_load(BAD_UTF8, worker_crt, worker_key, &out), out == NULL);
        out = SENTINEL;
        EXPECT_UTF8("decnet_identity_load", "cert_path",
                    decnet_identity_load(ca_crt, BAD_UTF8, worker_key, &out), out == NULL);
        out = SENTINEL;
        EXPECT_UTF8("decnet_identity_load", "key_path",
                    decnet_identity_load(ca_crt, worker_crt, BAD_UTF8, &out), out == NULL);

        /* IO and PKI from identity_load, naming the file. */
        const char *missing = path_in(g_tmp, "no-such.crt");
        out = SENTINEL;
        rc = decnet_identity_load(ca_crt, missing, worker_key, &out);
        expect_error("decnet_identity_load(missing cert file)", rc, DECNET_ERR_IO, NULL);
        CHECK(message_has(missing) && out == NULL, "identity_load IO: names the path, out NULL");
        const char *garbage = path_in(g_tmp, "garbage.key");
        write_file(garbage, "-----BEGIN PRIVATE KEY-----\nnot base64 at all!!\n-----END PRIVATE KEY-----\n");
        out = SENTINEL;
        rc = decnet_identity_load(ca_crt, worker_crt, garbage, &out);
        expect_error("decnet_identity_load(garbage key)", rc, DECNET_ERR_PKI, NULL);
        CHECK(message_has(garbage) && out == NULL, "identity_load PKI: names the key file, out NULL");
        /* A key that is not the certificate's. */
        const char *other_key = keepf("%s/home/.decnet/ca/master/worker.key", g_tmp);
        out = SENTINEL;
        rc = decnet_identity_load(ca_crt, worker_crt, other_key, &out);
        expect_error("decnet_identity_load(key of another certificate)", rc, DECNET_ERR_PKI, NULL);
        CHECK(out == NULL, "identity_load mismatched key: out NULL");
    }

    /* decnet_identity_fingerprint */
    {
        char *out = SENTINEL;
        EXPECT_NULL("decnet_identity_fingerprint", "identity", decnet_identity_fingerprint(NULL, &out),
                    out == NULL);
        EXPECT_NULL("decnet_identity_fingerprint", "out", decnet_identity_fingerprint(identity, NULL),
                    true);
    }

    decnet_string_free(file_fp);
    decnet_identity_free(identity);
}

static void test_pki(void) {
    decnet_result rc;
    char *ca_fp = NULL;
    char *file_fp = NULL;

    /* decnet_pki_ensure_ca */
    cover("call", "decnet_pki_ensure_ca", NULL);
    rc = decnet_pki_ensure_ca(g_ca_dir, &ca_fp);
    expect_ok("decnet_pki_ensure_ca(CA_DIR)", rc);
    rc = decnet_fingerprint_file(path_in(g_ca_dir, "ca.crt"), &file_fp);
    expect_ok("decnet_fingerprint_file(CA_DIR/ca.crt)", rc);
    CHECK(is_hex64(ca_fp) && same(ca_fp, file_fp), "pki_ensure_ca fingerprint == fingerprint_file(ca.crt)");
    decnet_string_free(ca_fp);
    decnet_string_free(file_fp);
    ca_fp = file_fp = NULL;

    {
        char *out = NULL;
        rc = decnet_pki_ensure_ca(NULL, &out);
        expect_null_allowed("decnet_pki_ensure_ca", "ca_dir", rc);
        rc = decnet_fingerprint_file(fmt("%s/home/.decnet/ca/ca.crt", g_tmp), &file_fp);
        CHECK(rc == DECNET_OK && same(out, file_fp), "pki_ensure_ca(NULL) is $HOME/.decnet/ca");
        decnet_string_free(out);
        decnet_string_free(file_fp);
        file_fp = NULL;
        out = SENTINEL;
        EXPECT_NULL("decnet_pki_ensure_ca", "out_fingerprint", decnet_pki_ensure_ca(g_ca_dir, NULL), true);
        EXPECT_UTF8("decnet_pki_ensure_ca", "ca_dir", decnet_pki_ensure_ca(BAD_UTF8, &out), out == NULL);
        out = SENTINEL;
        rc = decnet_pki_ensure_ca(path_in(g_tmp, "half-ca"), &out);
        expect_error("decnet_pki_ensure_ca(half a CA)", rc, DECNET_ERR_PKI, NULL);
        CHECK(out == NULL && !exists(fmt("%s/half-ca/ca.key", g_tmp)), "half CA: out NULL, nothing created");
    }

    /* decnet_pki_issue_worker_bundle, with a scratch CA. */
    cover("call", "decnet_pki_issue_worker_bundle", NULL);
    const char *ca = path_in(g_tmp, "issuing-ca");
    rc = decnet_pki_ensure_ca(ca, &ca_fp);
    expect_ok("decnet_pki_ensure_ca(fresh dir) creates a CA", rc);
    CHECK(exists(fmt("%s/ca.key", ca)) && exists(fmt("%s/ca.crt", ca)), "fresh CA: ca.key and ca.crt exist");
    {
        const char *sans[] = {"127.0.0.1", "worker-1.example"};
        const char *out_dir = path_in(g_tmp, "bundle");
        char *fp = NULL;
        rc = decnet_pki_issue_worker_bundle(ca, "worker-1", sans, 2, 30, out_dir, &fp);
        expect_ok("decnet_pki_issue_worker_bundle", rc);
        CHECK(is_hex64(fp), "issued fingerprint: 64 lowercase hex");
        CHECK(exists(fmt("%s/ca.crt", out_dir)) && exists(fmt("%s/worker.crt", out_dir)) &&
                  exists(fmt("%s/worker.key", out_dir)),
              "bundle: ca.crt, worker.crt and worker.key exist");
        CHECK(file_mode(fmt("%s/worker.key", out_dir)) == 0600,
              fmt("bundle: worker.key mode 0600 (got %04o)", file_mode(fmt("%s/worker.key", out_dir))));
        CHECK(file_mode(out_dir) == 0700, fmt("bundle: folder mode 0700 (got %04o)", file_mode(out_dir)));
        rc = decnet_fingerprint_file(fmt("%s/worker.crt", out_dir), &file_fp);
        CHECK(rc == DECNET_OK && same(fp, file_fp), "issued fingerprint == fingerprint_file(worker.crt)");
        decnet_string_free(file_fp);
        file_fp = NULL;
        rc = decnet_fingerprint_file(fmt("%s/ca.crt", out_dir), &file_fp);
        CHECK(rc == DECNET_OK && same(ca_fp, file_fp), "bundle ca.crt is the issuing CA");
        decnet_string_free(file_fp);
        file_fp = NULL;
        /* The bundle loads as an identity. */
        decnet_identity *bundle_identity = NULL;
        rc = decnet_identity_load(fmt("%s/ca.crt", out_dir), fmt("%s/worker.crt", out_dir),
                                  fmt("%s/worker.key", out_dir), &bundle_identity);
        expect_ok("decnet_identity_load(issued bundle)", rc);
        char *id_fp = NULL;
        if (rc == DECNET_OK) {
            decnet_identity_fingerprint(bundle_identity, &id_fp);
        }
        CHECK(same(id_fp, fp), "issued bundle identity has the issued fingerprint");
        decnet_string_free(id_fp);
        decnet_identity_free(bundle_identity);
        decnet_string_free(fp);

        /* sans NULL with count 0 and validity 0 (default) are allowed. */
        fp = NULL;
        rc = decnet_pki_issue_worker_bundle(ca, "worker-2", NULL, 0, 0, path_in(g_tmp, "bundle2"), &fp);
        expect_ok("decnet_pki_issue_worker_bundle(sans=NULL, count 0, validity 0)", rc);
        CHECK(is_hex64(fp), "sans=NULL bundle has a fingerprint");
        decnet_string_free(fp);
        /* ca_dir NULL: the default CA ($HOME/.decnet/ca, made above). */
        fp = NULL;
        rc = decnet_pki_issue_worker_bundle(NULL, "worker-3", sans, 1, 0, path_in(g_tmp, "bundle3"), &fp);
        expect_null_allowed("decnet_pki_issue_worker_bundle", "ca_dir", rc);
        rc = decnet_fingerprint_file(fmt("%s/bundle3/ca.crt", g_tmp), &file_fp);
        char *home_ca_fp = NULL;
        decnet_fingerprint_file(fmt("%s/home/.decnet/ca/ca.crt", g_tmp), &home_ca_fp);
        CHECK(rc == DECNET_OK && same(file_fp, home_ca_fp), "ca_dir=NULL issues from $HOME/.decnet/ca");
        decnet_string_free(home_ca_fp);
        decnet_string_free(file_fp);
        file_fp = NULL;
        decnet_string_free(fp);

        const char *bad_dir = path_in(g_tmp, "bundle-bad");
        char *out = SENTINEL;
        EXPECT_NULL("decnet_pki_issue_worker_bundle", "name",
                    decnet_pki_issue_worker_bundle(ca, NULL, sans, 2, 0, bad_dir, &out), out == NULL);
        out = SENTINEL;
        EXPECT_NULL("decnet_pki_issue_worker_bundle", "sans",
                    decnet_pki_issue_worker_bundle(ca, "w", NULL, 2, 0, bad_dir, &out), out == NULL);
        out = SENTINEL;
        EXPECT_NULL("decnet_pki_issue_worker_bundle", "out_dir",
                    decnet_pki_issue_worker_bundle(ca, "w", sans, 2, 0, NULL, &out), out == NULL);
        EXPECT_NULL("decnet_pki_issue_worker_bundle", "out_fingerprint",
                    decnet_pki_issue_worker_bundle(ca, "w", sans, 2, 0, bad_dir, NULL), true);
        {
            const char *with_null[] = {"127.0.0.1", NULL};
            out = SENTINEL;
            rc = decnet_pki_issue_worker_bundle(ca, "w", with_null, 2, 0, bad_dir, &out);
            expect_error("decnet_pki_issue_worker_bundle(sans[1]=NULL)", rc, DECNET_ERR_NULL_ARGUMENT, "sans");
            CHECK(out == NULL, "sans[1]=NULL: out left NULL");
        }
        out = SENTINEL;
        EXPECT_UTF8("decnet_pki_issue_worker_bundle", "ca_dir",
                    decnet_pki_issue_worker_bundle(BAD_UTF8, "w", sans, 2, 0, bad_dir, &out), out == NULL);
        out = SENTINEL;
        EXPECT_UTF8("decnet_pki_issue_worker_bundle", "name",
                    decnet_pki_issue_worker_bundle(ca, BAD_UTF8, sans, 2, 0, bad_dir, &out), out == NULL);
        {
            const char *bad_sans[] = {"127.0.0.1", BAD_UTF8};
            out = SENTINEL;
            EXPECT_UTF8("decnet_pki_issue_worker_bundle", "sans",
                        decnet_pki_issue_worker_bundle(ca, "w", bad_sans, 2, 0, bad_dir, &out), out == NULL);
        }
        out = SENTINEL;
        EXPECT_UTF8("decnet_pki_issue_worker_bundle", "out_dir",
                    decnet_pki_issue_worker_bundle(ca, "w", sans, 2, 0, BAD_UTF8, &out), out == NULL);
        out = SENTINEL;
        rc = decnet_pki_issue_worker_bundle(ca, "", sans, 2, 0, bad_dir, &out);
        expect_error("decnet_pki_issue_worker_bundle(name=\"\")", rc, DECNET_ERR_INVALID_ARGUMENT, "name");
        CHECK(out == NULL, "empty name: out left NULL");
        {
            const char *empty_san[] = {""};
            out = SENTINEL;
            rc = decnet_pki_issue_worker_bundle(ca, "w", empty_san, 1, 0, bad_dir, &out);
            expect_error("decnet_pki_issue_worker_bundle(sans={\"\"})", rc, DECNET_ERR_INVALID_ARGUMENT, "sans");
            CHECK(out == NULL, "empty SAN: out left NULL");
        }
        /* No CA in ca_dir: the CA must already exist. */
        out = SENTINEL;
        rc = decnet_pki_issue_worker_bundle(path_in(g_tmp, "no-ca-here"), "w", sans, 2, 0, bad_dir, &out);
        CHECK(rc == DECNET_ERR_NOT_ENROLLED && out == NULL &&
                  strstr(decnet_last_error_message(), "identity-ensure") != NULL,
              fmt("issue_worker_bundle without a CA is not_enrolled, naming the fix (%s: %s)", name_of(rc),
                  decnet_last_error_message()));
        CHECK(!exists(fmt("%s/no-ca-here/ca.key", g_tmp)), "issue_worker_bundle never creates a CA");
        CHECK(!exists(bad_dir), "no failed issue wrote a bundle");
    }
    decnet_string_free(ca_fp);
}

static void test_fingerprint_and_hash(void) {
    decnet_result rc;
    char *out = SENTINEL;

    /* decnet_fingerprint_file: IO and PKI naming the path. */
    cover("call", "decnet_fingerprint_file", NULL);
    const char *missing = path_in(g_tmp, "missing.crt");
    rc = decnet_fingerprint_file(missing, &out);
    expect_error("decnet_fingerprint_file(missing file)", rc, DECNET_ERR_IO, NULL);
    CHECK(message_has(missing), "IO: the message names the path");
    CHECK(out == NULL, "IO: out left NULL");
    CHECK(decnet_last_error_http_status() == 0 && decnet_last_error_http_body() == NULL &&
              decnet_last_error_expected_fingerprint() == NULL && !decnet_last_error_may_have_reached_worker(),
          "IO: no HTTP, pin or connection detail");

    const char *garbage = path_in(g_tmp, "garbage.pem");
    write_file(garbage, "-----BEGIN CERTIFICATE-----\nthis is not base64 DER\n-----END CERTIFICATE-----\n");
    out = SENTINEL;
    rc = decnet_fingerprint_file(garbage, &out);
    expect_error("decnet_fingerprint_file(garbage PEM)", rc, DECNET_ERR_PKI, NULL);
    CHECK(message_has(garbage), "PKI: the message names the file");
    CHECK(out == NULL, "PKI: out left NULL");

    const char *text = path_in(g_tmp, "text.txt");
    write_file(text, "hello, not a certificate\n");
    out = SENTINEL;
    rc = decnet_fingerprint_file(text, &out);
    expect_error("decnet_fingerprint_file(plain text)", rc, DECNET_ERR_PKI, NULL);
    CHECK(out == NULL, "plain text: out left NULL");

    out = SENTINEL;
    EXPECT_NULL("decnet_fingerprint_file", "path", decnet_fingerprint_file(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_fingerprint_file", "out",
                decnet_fingerprint_file(path_in(g_ca_dir, "ca.crt"), NULL), true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_fingerprint_file", "path", decnet_fingerprint_file(BAD_UTF8, &out), out == NULL);

    /* decnet_topology_hash */
    cover("call", "decnet_topology_hash", NULL);
    out = NULL;
    rc = decnet_topology_hash("{}", &out);
    expect_ok("decnet_topology_hash({})", rc);
    CHECK(same(out, EMPTY_TOPOLOGY_HASH), fmt("hash of {} is %s (got %s)", EMPTY_TOPOLOGY_HASH, out ? out : "(null)"));
    decnet_string_free(out);
    out = NULL;
    rc = decnet_topology_hash(" { } ", &out);
    CHECK(rc == DECNET_OK && same(out, EMPTY_TOPOLOGY_HASH), "hash ignores whitespace");
    decnet_string_free(out);

    out = SENTINEL;
    EXPECT_NULL("decnet_topology_hash", "hydrated_json", decnet_topology_hash(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_topology_hash", "out", decnet_topology_hash("{}", NULL), true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_topology_hash", "hydrated_json", decnet_topology_hash(BAD_UTF8, &out), out == NULL);
    out = SENTINEL;
    rc = decnet_topology_hash("{\"a\":", &out);
    cover("json", "decnet_topology_hash", "hydrated_json");
    expect_error("decnet_topology_hash(malformed JSON)", rc, DECNET_ERR_INVALID_ARGUMENT, NULL);
    CHECK(out == NULL, "decnet_topology_hash(malformed JSON): out left NULL");
    CHECK(message_names("hydrated_json"),
          "decnet_topology_hash(malformed JSON): message names `hydrated_json`");
    out = SENTINEL;
    rc = decnet_topology_hash("[1,2]", &out);
    expect_error("decnet_topology_hash(an array)", rc, DECNET_ERR_INVALID_ARGUMENT, NULL);
    CHECK(out == NULL, "decnet_topology_hash(an array): out left NULL");
}

/* Host records of the stand-in workers. */
static bool load_hosts(const char *hosts_dir) {
    g_host_ok = read_file(path_in(hosts_dir, "ok.json"));
    g_host_close = read_file(path_in(hosts_dir, "close.json"));
    g_host_stall = read_file(path_in(hosts_dir, "stall.json"));
    g_host_nonjson = read_file(path_in(hosts_dir, "nonjson.json"));
    CHECK(g_host_ok && g_host_close && g_host_stall && g_host_nonjson,
          fmt("read the four host records in %s", hosts_dir));
    if (!(g_host_ok && g_host_close && g_host_stall && g_host_nonjson)) {
        return false;
    }
    long port = json_number(g_host_ok, "agent_port");
    bool ok = json_string(g_host_ok, "address", g_ok_address, sizeof g_ok_address) &&
              json_string(g_host_ok, "client_cert_fingerprint", g_ok_pin, sizeof g_ok_pin) && port > 0 &&
              port <= 65535;
    g_ok_port = (unsigned short)port;
    CHECK(ok && is_hex64(g_ok_pin), "ok.json has address, agent_port and a 64-hex pin");
    return ok;
}

/* Client construction: both constructors' arguments. */
/* Counts client.unpinned events the log callback saw. */
static int g_unpinned_events;

static void count_unpinned(uint32_t level, const char *event_json, void *user_data) {
    (void)user_data;
    if (level == DECNET_LOG_WARN && strstr(event_json, "\"event\":\"client.unpinned\"") != NULL) {
        g_unpinned_events++;
    }
}

/* The explicit opt-outs of pinning: they connect, and each warns. */
static void test_unpinned_opt_in(const decnet_identity *identity) {
    decnet_client *client = NULL;
    char *answer = NULL;
    char record[256];
    snprintf(record, sizeof record, "{\"address\":\"%s\",\"agent_port\":%u}", g_ok_address,
             (unsigned)g_ok_port);
    g_unpinned_events = 0;
    expect_ok("set a warn callback", decnet_set_log_callback(DECNET_LOG_WARN, count_unpinned, NULL));

    cover("call", "decnet_client_new_from_host_json_unpinned", NULL);
    decnet_result rc = decnet_client_new_from_host_json_unpinned(identity, record, DECNET_HOSTNAME_OFF, &client);
    expect_ok("decnet_client_new_from_host_json_unpinned(record without a pin)", rc);
    if (rc == DECNET_OK) {
        expect_ok("unpinned (host record) health", decnet_client_health(client, &answer));
        decnet_string_free(answer);
        answer = NULL;
    }
    decnet_client_free(client);
    CHECK(g_unpinned_events == 1, "the host-record opt-out raised one client.unpinned warning");
    client = SENTINEL;
    rc = decnet_client_new_from_host_json_unpinned(
        identity, "{\"address\":\"127.0.0.1\",\"client_cert_fingerprnt\":null}", DECNET_HOSTNAME_OFF, &client);
    expect_error("unpinned opt-out still refuses a misspelt key", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "client_cert_fingerprnt");
    CHECK(client == NULL, "misspelt key (unpinned): out left NULL");
    client = SENTINEL;
    EXPECT_NULL("decnet_client_new_from_host_json_unpinned", "identity",
                decnet_client_new_from_host_json_unpinned(NULL, record, DECNET_HOSTNAME_OFF, &client),
                client == NULL);
    client = SENTINEL;
    EXPECT_NULL("decnet_client_new_from_host_json_unpinned", "host_json",
                decnet_client_new_from_host_json_unpinned(identity, NULL, DECNET_HOSTNAME_OFF, &client),
                client == NULL);
    EXPECT_NULL("decnet_client_new_from_host_json_unpinned", "out",
                decnet_client_new_from_host_json_unpinned(identity, record, DECNET_HOSTNAME_OFF, NULL), true);
    client = SENTINEL;
    EXPECT_UTF8("decnet_client_new_from_host_json_unpinned", "host_json",
                decnet_client_new_from_host_json_unpinned(identity, BAD_UTF8, DECNET_HOSTNAME_OFF, &client),
                client == NULL);
    client = SENTINEL;
    EXPECT_BAD_JSON("decnet_client_new_from_host_json_unpinned", "host_json", "host_json",
                    decnet_client_new_from_host_json_unpinned(identity, "{", DECNET_HOSTNAME_OFF, &client),
                    client == NULL);
    client = SENTINEL;
    cover("range", "decnet_client_new_from_host_json_unpinned", "hostname_verification");
    rc = decnet_client_new_from_host_json_unpinned(identity, record, 7, &client);
    expect_error("decnet_client_new_from_host_json_unpinned(hostname_verification=7)", rc,
                 DECNET_ERR_INVALID_ARGUMENT, "hostname_verification");
    CHECK(client == NULL, "unpinned hostname_verification=7: out left NULL");

    cover("call", "decnet_client_new_unpinned", NULL);
    client = NULL;
    rc = decnet_client_new_unpinned(identity, g_ok_address, g_ok_port, DECNET_HOSTNAME_OFF, &client);
    expect_ok("decnet_client_new_unpinned(address, port)", rc);
    if (rc == DECNET_OK) {
        expect_ok("unpinned (address) health", decnet_client_health(client, &answer));
        decnet_string_free(answer);
    }
    decnet_client_free(client);
    CHECK(g_unpinned_events == 2, "the address opt-out raised one client.unpinned warning");
    client = SENTINEL;
    EXPECT_NULL("decnet_client_new_unpinned", "identity",
                decnet_client_new_unpinned(NULL, g_ok_address, g_ok_port, DECNET_HOSTNAME_OFF, &client),
                client == NULL);
    client = SENTINEL;
    EXPECT_NULL("decnet_client_new_unpinned", "address",
                decnet_client_new_unpinned(identity, NULL, g_ok_port, DECNET_HOSTNAME_OFF, &client),
                client == NULL);
    EXPECT_NULL("decnet_client_new_unpinned", "out",
                decnet_client_new_unpinned(identity, g_ok_address, g_ok_port, DECNET_HOSTNAME_OFF, NULL), true);
    client = SENTINEL;
    EXPECT_UTF8("decnet_client_new_unpinned", "address",
                decnet_client_new_unpinned(identity, BAD_UTF8, g_ok_port, DECNET_HOSTNAME_OFF, &client),
                client == NULL);
    client = SENTINEL;
    cover("range", "decnet_client_new_unpinned", "hostname_verification");
    rc = decnet_client_new_unpinned(identity, g_ok_address, g_ok_port, 7, &client);
    expect_error("decnet_client_new_unpinned(hostname_verification=7)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "hostname_verification");
    CHECK(client == NULL, "decnet_client_new_unpinned(hostname_verification=7): out left NULL");
    expect_ok("remove the callback", decnet_set_log_callback(DECNET_LOG_OFF, NULL, NULL));
}

static void test_client_new(const decnet_identity *identity) {
    decnet_result rc;
    decnet_client *client = NULL;

    cover("call", "decnet_client_new_from_host_json", NULL);
    rc = decnet_client_new_from_host_json(identity, g_host_ok, DECNET_HOSTNAME_ON, &client);
    expect_ok("decnet_client_new_from_host_json(ok.json)", rc);
    decnet_client_free(client);
    client = SENTINEL;
    EXPECT_NULL("decnet_client_new_from_host_json", "identity",
                decnet_client_new_from_host_json(NULL, g_host_ok, DECNET_HOSTNAME_ON, &client), client == NULL);
    client = SENTINEL;
    EXPECT_NULL("decnet_client_new_from_host_json", "host_json",
                decnet_client_new_from_host_json(identity, NULL, DECNET_HOSTNAME_ON, &client), client == NULL);
    EXPECT_NULL("decnet_client_new_from_host_json", "out",
                decnet_client_new_from_host_json(identity, g_host_ok, DECNET_HOSTNAME_ON, NULL), true);
    client = SENTINEL;
    EXPECT_UTF8("decnet_client_new_from_host_json", "host_json",
                decnet_client_new_from_host_json(identity, BAD_UTF8, DECNET_HOSTNAME_ON, &client),
                client == NULL);
    client = SENTINEL;
    EXPECT_BAD_JSON("decnet_client_new_from_host_json", "host_json", "host_json",
                    decnet_client_new_from_host_json(identity, "{\"address\":", DECNET_HOSTNAME_ON, &client),
                    client == NULL);
    client = SENTINEL;
    cover("range", "decnet_client_new_from_host_json", "hostname_verification");
    rc = decnet_client_new_from_host_json(identity, g_host_ok, 7, &client);
    expect_error("decnet_client_new_from_host_json(hostname_verification=7)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "hostname_verification");
    CHECK(client == NULL, "hostname_verification=7: out left NULL");
    /* Bad fields are named. */
    client = SENTINEL;
    rc = decnet_client_new_from_host_json(identity, "{\"agent_port\":1}", DECNET_HOSTNAME_OFF, &client);
    expect_error("host record without address", rc, DECNET_ERR_INVALID_ARGUMENT, "address");
    client = SENTINEL;
    rc = decnet_client_new_from_host_json(identity, "{\"address\":\"127.0.0.1\",\"agent_port\":70000}",
                                          DECNET_HOSTNAME_OFF, &client);
    expect_error("host record with agent_port 70000", rc, DECNET_ERR_INVALID_ARGUMENT, "agent_port");
    client = SENTINEL;
    rc = decnet_client_new_from_host_json(
        identity, "{\"address\":\"127.0.0.1\",\"client_cert_fingerprint\":\"abc\"}", DECNET_HOSTNAME_OFF, &client);
    expect_error("host record with a short pin", rc, DECNET_ERR_INVALID_ARGUMENT, "client_cert_fingerprint");
    /* Fail closed: no pin, or a misspelt key, is refused by field. */
    client = SENTINEL;
    rc = decnet_client_new_from_host_json(identity, "{\"address\":\"127.0.0.1\"}", DECNET_HOSTNAME_OFF, &client);
    expect_error("host record without a pin", rc, DECNET_ERR_INVALID_ARGUMENT, "client_cert_fingerprint");
    CHECK(client == NULL, "host record without a pin: out left NULL");
    client = SENTINEL;
    rc = decnet_client_new_from_host_json(
        identity,
        "{\"address\":\"127.0.0.1\",\"client_cert_fingerprnt\":"
        "\"0000000000000000000000000000000000000000000000000000000000000000\"}",
        DECNET_HOSTNAME_OFF, &client);
    expect_error("host record with a misspelt pin key", rc, DECNET_ERR_INVALID_ARGUMENT, "client_cert_fingerprnt");
    CHECK(client == NULL, "misspelt pin key: out left NULL");
    client = SENTINEL;
    rc = decnet_client_new_from_host_json(identity, "[]", DECNET_HOSTNAME_OFF, &client);
    expect_error("host record that is an array", rc, DECNET_ERR_INVALID_ARGUMENT, NULL);
    CHECK(client == NULL, "array host record: out left NULL");

    test_unpinned_opt_in(identity);

    cover("call", "decnet_client_new", NULL);
    client = NULL;
    rc = decnet_client_new(identity, g_ok_address, g_ok_port, g_ok_pin, DECNET_HOSTNAME_ON, &client);
    expect_ok("decnet_client_new(address, port, pin)", rc);
    decnet_client_free(client);
    client = NULL;
    client = SENTINEL;
    cover("null", "decnet_client_new", "pin");
    rc = decnet_client_new(identity, g_ok_address, g_ok_port, NULL, DECNET_HOSTNAME_OFF, &client);
    expect_error("decnet_client_new(pin=NULL) fails closed", rc, DECNET_ERR_INVALID_ARGUMENT, "pin");
    CHECK(message_has("decnet_client_new_unpinned"), "pin=NULL: the message names the opt-out");
    CHECK(client == NULL, "decnet_client_new(pin=NULL): out left NULL");
    client = SENTINEL;
    EXPECT_NULL("decnet_client_new", "identity",
                decnet_client_new(NULL, g_ok_address, g_ok_port, NULL, DECNET_HOSTNAME_ON, &client),
                client == NULL);
    client = SENTINEL;
    EXPECT_NULL("decnet_client_new", "address",
                decnet_client_new(identity, NULL, g_ok_port, NULL, DECNET_HOSTNAME_ON, &client), client == NULL);
    EXPECT_NULL("decnet_client_new", "out",
                decnet_client_new(identity, g_ok_address, g_ok_port, NULL, DECNET_HOSTNAME_ON, NULL), true);
    client = SENTINEL;
    EXPECT_UTF8("decnet_client_new", "address",
                decnet_client_new(identity, BAD_UTF8, g_ok_port, NULL, DECNET_HOSTNAME_ON, &client),
                client == NULL);
    client = SENTINEL;
    EXPECT_UTF8("decnet_client_new", "pin",
                decnet_client_new(identity, g_ok_address, g_ok_port, BAD_UTF8, DECNET_HOSTNAME_ON, &client),
                client == NULL);
    client = SENTINEL;
    cover("range", "decnet_client_new", "hostname_verification");
    rc = decnet_client_new(identity, g_ok_address, g_ok_port, g_ok_pin, 7, &client);
    expect_error("decnet_client_new(hostname_verification=7)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "hostname_verification");
    CHECK(client == NULL, "decnet_client_new(hostname_verification=7): out left NULL");
    /* DECNET_HOSTNAME_FROM_ENV reads DECNET_VERIFY_HOSTNAME when the client
     * is made. (No library thread runs yet, so setenv is safe here.) */
    setenv("DECNET_VERIFY_HOSTNAME", "maybe", 1);
    client = SENTINEL;
    rc = decnet_client_new(identity, g_ok_address, g_ok_port, g_ok_pin, DECNET_HOSTNAME_FROM_ENV, &client);
    expect_error("decnet_client_new(FROM_ENV, DECNET_VERIFY_HOSTNAME=maybe)", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "DECNET_VERIFY_HOSTNAME");
    CHECK(client == NULL, "DECNET_VERIFY_HOSTNAME=maybe: out left NULL");
    setenv("DECNET_VERIFY_HOSTNAME", "false", 1);
    client = NULL;
    rc = decnet_client_new(identity, g_ok_address, g_ok_port, g_ok_pin, DECNET_HOSTNAME_FROM_ENV, &client);
    expect_ok("decnet_client_new(FROM_ENV, DECNET_VERIFY_HOSTNAME=false)", rc);
    decnet_client_free(client);
    unsetenv("DECNET_VERIFY_HOSTNAME");
    client = SENTINEL;
    rc = decnet_client_new(identity, "not an address/", g_ok_port, g_ok_pin, DECNET_HOSTNAME_ON, &client);
    expect_error("decnet_client_new(address=\"not an address/\")", rc, DECNET_ERR_INVALID_ARGUMENT, "address");
    CHECK(client == NULL, "bad address: out left NULL");
    client = SENTINEL;
    rc = decnet_client_new(identity, g_ok_address, g_ok_port, "xyz", DECNET_HOSTNAME_ON, &client);
    expect_error("decnet_client_new(pin=\"xyz\")", rc, DECNET_ERR_INVALID_ARGUMENT, NULL);
    CHECK(client == NULL, "bad pin: out left NULL");
    CHECK(message_names("pin"), "decnet_client_new(pin=\"xyz\"): message names `pin`");
}

static void test_timeouts(const decnet_client *client) {
    decnet_result rc;
    decnet_timeouts t;
    cover("call", "decnet_client_get_timeouts", NULL);
    cover("call", "decnet_client_set_timeouts", NULL);
    static const uint64_t defaults[4][4] = {
        {5000, 15000, 5000, 5000},   /* control */
        {10000, 600000, 30000, 5000}, /* deploy */
        {10000, 600000, 30000, 5000}, /* topology apply */
        {10000, 300000, 30000, 5000}, /* topology teardown */
    };
    for (uint32_t p = 0; p < 4; p++) {
        memset(&t, 0xAA, sizeof t);
        rc = decnet_client_get_timeouts(client, p, &t);
        expect_ok(fmt("decnet_client_get_timeouts(profile %u)", (unsigned)p), rc);
        CHECK(t.connect_ms == defaults[p][0] && t.read_ms == defaults[p][1] && t.write_ms == defaults[p][2] &&
                  t.pool_ms == defaults[p][3],
              fmt("profile %u defaults %llu/%llu/%llu/%llu ms (got %llu/%llu/%llu/%llu)", (unsigned)p,
                  (unsigned long long)defaults[p][0], (unsigned long long)defaults[p][1],
                  (unsigned long long)defaults[p][2], (unsigned long long)defaults[p][3],
                  (unsigned long long)t.connect_ms, (unsigned long long)t.read_ms,
                  (unsigned long long)t.write_ms, (unsigned long long)t.pool_ms));
    }
    decnet_timeouts want = {1234, 5678, 910, 0};
    rc = decnet_client_set_timeouts(client, DECNET_PROFILE_TOPOLOGY_TEARDOWN, &want);
    expect_ok("decnet_client_set_timeouts(topology teardown)", rc);
    memset(&t, 0, sizeof t);
    rc = decnet_client_get_timeouts(client, DECNET_PROFILE_TOPOLOGY_TEARDOWN, &t);
    CHECK(rc == DECNET_OK && memcmp(&t, &want, sizeof t) == 0, "timeouts set/get round trip (pool 0 allowed)");
    rc = decnet_client_get_timeouts(client, DECNET_PROFILE_CONTROL, &t);
    CHECK(rc == DECNET_OK && t.read_ms == 15000, "setting one profile leaves the others");
    decnet_timeouts restore = {10000, 300000, 30000, 5000};
    expect_ok("restore topology teardown timeouts",
              decnet_client_set_timeouts(client, DECNET_PROFILE_TOPOLOGY_TEARDOWN, &restore));

    /* Failures. The struct out-parameter: header says "set to NULL (or
     * zero) first and written only on success"; accept all-zero or
     * untouched, never a partial write. */
    decnet_timeouts sentinel;
    memset(&sentinel, 0xAA, sizeof sentinel);
    const decnet_timeouts zero = {0, 0, 0, 0};
    t = sentinel;
    EXPECT_NULL("decnet_client_get_timeouts", "client", decnet_client_get_timeouts(NULL, 0, &t),
                memcmp(&t, &sentinel, sizeof t) == 0 || memcmp(&t, &zero, sizeof t) == 0);
    EXPECT_NULL("decnet_client_get_timeouts", "out", decnet_client_get_timeouts(client, 0, NULL), true);
    t = sentinel;
    cover("range", "decnet_client_get_timeouts", "profile");
    rc = decnet_client_get_timeouts(client, 9, &t);
    expect_error("decnet_client_get_timeouts(profile 9)", rc, DECNET_ERR_INVALID_ARGUMENT, "profile");
    CHECK(memcmp(&t, &sentinel, sizeof t) == 0 || memcmp(&t, &zero, sizeof t) == 0,
          "get_timeouts(profile 9): out not partially written");
    EXPECT_NULL("decnet_client_set_timeouts", "client", decnet_client_set_timeouts(NULL, 0, &want), true);
    EXPECT_NULL("decnet_client_set_timeouts", "timeouts", decnet_client_set_timeouts(client, 0, NULL), true);
    cover("range", "decnet_client_set_timeouts", "profile");
    rc = decnet_client_set_timeouts(client, 9, &want);
    expect_error("decnet_client_set_timeouts(profile 9)", rc, DECNET_ERR_INVALID_ARGUMENT, "profile");
    decnet_timeouts zero_read = {1000, 0, 1000, 1000};
    rc = decnet_client_set_timeouts(client, DECNET_PROFILE_CONTROL, &zero_read);
    expect_error("decnet_client_set_timeouts(read 0)", rc, DECNET_ERR_INVALID_ARGUMENT, "read");
    rc = decnet_client_get_timeouts(client, DECNET_PROFILE_CONTROL, &t);
    CHECK(rc == DECNET_OK && t.read_ms == 15000, "a rejected set_timeouts changes nothing");

    cover("call", "decnet_client_set_max_response_bytes", NULL);
    EXPECT_NULL("decnet_client_set_max_response_bytes", "client", decnet_client_set_max_response_bytes(NULL, 10),
                true);
    rc = decnet_client_set_max_response_bytes(client, 0);
    expect_error("decnet_client_set_max_response_bytes(0)", rc, DECNET_ERR_INVALID_ARGUMENT, "max_response_bytes");
    expect_ok("decnet_client_set_max_response_bytes(16 MiB)",
              decnet_client_set_max_response_bytes(client, 16u * 1024u * 1024u));

    cover("call", "decnet_client_set_session_resumption", NULL);
    EXPECT_NULL("decnet_client_set_session_resumption", "client",
                decnet_client_set_session_resumption(NULL, false), true);
    expect_ok("decnet_client_set_session_resumption(false)",
              decnet_client_set_session_resumption(client, false));
    expect_ok("decnet_client_set_session_resumption(true)",
              decnet_client_set_session_resumption(client, true));

    cover("call", "decnet_client_handshake_counts", NULL);
    decnet_handshake_counts counts = {7, 7};
    EXPECT_NULL("decnet_client_handshake_counts", "client", decnet_client_handshake_counts(NULL, &counts),
                counts.full == 0 && counts.resumed == 0);
    EXPECT_NULL("decnet_client_handshake_counts", "out", decnet_client_handshake_counts(client, NULL), true);
    rc = decnet_client_handshake_counts(client, &counts);
    expect_ok("decnet_client_handshake_counts", rc);
}

/* NULL / UTF-8 / JSON checks of the RPCs: all fail before any traffic. */
static void test_rpc_arguments(const decnet_client *client) {
    char *out = SENTINEL;
    const char *services[] = {"ssh", "http"};

    cover("call", "decnet_client_connect", NULL);
    EXPECT_NULL("decnet_client_connect", "client", decnet_client_connect(NULL), true);

    cover("call", "decnet_client_describe", NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_client_describe", "client", decnet_client_describe(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_client_describe", "out", decnet_client_describe(client, NULL), true);

    out = SENTINEL;
    EXPECT_NULL("decnet_client_health", "client", decnet_client_health(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_client_health", "out_json", decnet_client_health(client, NULL), true);
    out = SENTINEL;
    EXPECT_NULL("decnet_client_status", "client", decnet_client_status(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_client_status", "out_json", decnet_client_status(client, NULL), true);
    out = SENTINEL;
    EXPECT_NULL("decnet_client_self_destruct", "client", decnet_client_self_destruct(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_client_self_destruct", "out_json", decnet_client_self_destruct(client, NULL), true);
    out = SENTINEL;
    EXPECT_NULL("decnet_client_topology_state", "client", decnet_client_topology_state(NULL, &out), out == NULL);
    EXPECT_NULL("decnet_client_topology_state", "out_json", decnet_client_topology_state(client, NULL), true);

    /* deploy */
    out = SENTINEL;
    EXPECT_NULL("decnet_client_deploy", "client", decnet_client_deploy(NULL, DEPLOY_CONFIG, true, false, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_client_deploy", "config_json", decnet_client_deploy(client, NULL, true, false, &out),
                out == NULL);
    EXPECT_NULL("decnet_client_deploy", "out_json", decnet_client_deploy(client, DEPLOY_CONFIG, true, false, NULL),
                true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_client_deploy", "config_json", decnet_client_deploy(client, BAD_UTF8, true, false, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_BAD_JSON("decnet_client_deploy", "config_json", "config_json",
                    decnet_client_deploy(client, "{\"deckies\":[", true, false, &out), out == NULL);
    out = SENTINEL;
    decnet_result rc = decnet_client_deploy(client, "{\"deckies\":[]}", true, false, &out);
    expect_error("decnet_client_deploy(no deckies): checked locally", rc, DECNET_ERR_INVALID_ARGUMENT,
                 "config.deckies");
    CHECK(out == NULL, "deploy(no deckies): out left NULL");

    /* mutate */
    out = SENTINEL;
    EXPECT_NULL("decnet_client_mutate", "client", decnet_client_mutate(NULL, "decky-01", services, 2, true, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_client_mutate", "decky_id", decnet_client_mutate(client, NULL, services, 2, true, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_client_mutate", "services", decnet_client_mutate(client, "decky-01", NULL, 2, true, &out),
                out == NULL);
    EXPECT_NULL("decnet_client_mutate", "out_json",
                decnet_client_mutate(client, "decky-01", services, 2, true, NULL), true);
    {
        const char *with_null[] = {"ssh", NULL};
        out = SENTINEL;
        rc = decnet_client_mutate(client, "decky-01", with_null, 2, true, &out);
        expect_error("decnet_client_mutate(services[1]=NULL)", rc, DECNET_ERR_NULL_ARGUMENT, "services");
        CHECK(out == NULL, "services[1]=NULL: out left NULL");
        const char *bad[] = {"ssh", BAD_UTF8};
        out = SENTINEL;
        EXPECT_UTF8("decnet_client_mutate", "services", decnet_client_mutate(client, "decky-01", bad, 2, true, &out),
                    out == NULL);
    }
    out = SENTINEL;
    EXPECT_UTF8("decnet_client_mutate", "decky_id", decnet_client_mutate(client, BAD_UTF8, services, 2, true, &out),
                out == NULL);

    /* teardown (decky_id NULL is allowed: tested with traffic below) */
    out = SENTINEL;
    EXPECT_NULL("decnet_client_teardown", "client", decnet_client_teardown(NULL, "decky-01", &out), out == NULL);
    EXPECT_NULL("decnet_client_teardown", "out_json", decnet_client_teardown(client, "decky-01", NULL), true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_client_teardown", "decky_id", decnet_client_teardown(client, BAD_UTF8, &out), out == NULL);

    /* apply_topology (version_hash NULL is allowed: tested below) */
    out = SENTINEL;
    EXPECT_NULL("decnet_client_apply_topology", "client", decnet_client_apply_topology(NULL, "{}", NULL, &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_client_apply_topology", "hydrated_json",
                decnet_client_apply_topology(client, NULL, NULL, &out), out == NULL);
    EXPECT_NULL("decnet_client_apply_topology", "out_json", decnet_client_apply_topology(client, "{}", NULL, NULL),
                true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_client_apply_topology", "hydrated_json",
                decnet_client_apply_topology(client, BAD_UTF8, NULL, &out), out == NULL);
    out = SENTINEL;
    EXPECT_UTF8("decnet_client_apply_topology", "version_hash",
                decnet_client_apply_topology(client, "{}", BAD_UTF8, &out), out == NULL);
    out = SENTINEL;
    EXPECT_BAD_JSON("decnet_client_apply_topology", "hydrated_json", "hydrated_json",
                    decnet_client_apply_topology(client, "{\"topology\":}", NULL, &out), out == NULL);

    /* teardown_topology */
    out = SENTINEL;
    EXPECT_NULL("decnet_client_teardown_topology", "client", decnet_client_teardown_topology(NULL, "t", &out),
                out == NULL);
    out = SENTINEL;
    EXPECT_NULL("decnet_client_teardown_topology", "topology_id",
                decnet_client_teardown_topology(client, NULL, &out), out == NULL);
    EXPECT_NULL("decnet_client_teardown_topology", "out_json", decnet_client_teardown_topology(client, "t", NULL),
                true);
    out = SENTINEL;
    EXPECT_UTF8("decnet_client_teardown_topology", "topology_id",
                decnet_client_teardown_topology(client, BAD_UTF8, &out), out == NULL);
}

/* Runs one RPC that must succeed; returns its JSON (caller frees) or NULL. */
static char *rpc_ok(const char *what, decnet_result rc, char *json) {
    expect_ok(what, rc);
    CHECK(rc != DECNET_OK || (json != NULL && json[0] == '{'), fmt("%s: returns a JSON object", what));
    if (rc != DECNET_OK) {
        decnet_string_free(json);
        return NULL;
    }
    return json;
}

/* `json` = the call's result, read after the call. */
#define RPC_OK(what, call, json)                  \
    do {                                          \
        decnet_result rc_ = (call);               \
        (json) = rpc_ok((what), rc_, (json));     \
    } while (0)

/* Every RPC once against the `ok` worker, and the HTTP errors. */
static void test_rpcs(const decnet_client *client) {
    char *json = NULL;
    char *text = NULL;
    decnet_result rc;

    rc = decnet_client_describe(client, &text);
    expect_ok("decnet_client_describe", rc);
    const char *want = keepf("AgentClient(name='ok', address='%s', port=%u)", g_ok_address, (unsigned)g_ok_port);
    CHECK(same(text, want), fmt("describe is \"%s\" (got \"%s\")", want, text ? text : "(null)"));
    decnet_string_free(text);

    expect_ok("decnet_client_connect(ok worker)", decnet_client_connect(client));

    cover("call", "decnet_client_health", NULL);
    RPC_OK("decnet_client_health", decnet_client_health(client, &json), json);
    CHECK(contains(json, "\"status\":\"ok\""), "health is {\"status\":\"ok\"}");
    decnet_string_free(json);
    json = NULL;

    cover("call", "decnet_client_deploy", NULL);
    RPC_OK("decnet_client_deploy", decnet_client_deploy(client, DEPLOY_CONFIG, false, false, &json), json);
    CHECK(contains(json, "accepted") && contains(json, "decky-01"), "deploy: accepted decky-01");
    decnet_string_free(json);
    json = NULL;

    cover("call", "decnet_client_status", NULL);
    RPC_OK("decnet_client_status", decnet_client_status(client, &json), json);
    CHECK(contains(json, "\"deployed\":true") && contains(json, "decky-01"), "status: deployed decky-01");
    decnet_string_free(json);
    json = NULL;

    cover("call", "decnet_client_mutate", NULL);
    const char *services[] = {"ssh", "http"};
    RPC_OK("decnet_client_mutate", decnet_client_mutate(client, "decky-01", services, 2, false, &json), json);
    CHECK(contains(json, "accepted") && contains(json, "http"), "mutate: accepted");
    decnet_string_free(json);
    json = NULL;
    RPC_OK("decnet_client_mutate(dry run, known decky)",
                  decnet_client_mutate(client, "decky-01", services, 2, true, &json), json);
    decnet_string_free(json);

    /* HTTP 404: dry-run mutate of an unknown decky. */
    json = SENTINEL;
    rc = decnet_client_mutate(client, "no-such-decky", services, 2, true, &json);
    expect_error("mutate(unknown decky, dry run)", rc, DECNET_ERR_HTTP_STATUS, NULL);
    CHECK(json == NULL, "404: out_json left NULL");
    CHECK(decnet_last_error_http_status() == 404, fmt("404: status %u", (unsigned)decnet_last_error_http_status()));
    CHECK(same(decnet_last_error_http_body(), "{\"detail\":\"decky 'no-such-decky' not found\"}"),
          fmt("404: body is the worker's (got %s)",
              decnet_last_error_http_body() ? decnet_last_error_http_body() : "(null)"));
    CHECK(message_has("404") && message_has("not found"), "404: message has the status and detail");
    CHECK(decnet_last_error_expected_fingerprint() == NULL && decnet_last_error_actual_fingerprint() == NULL &&
              !decnet_last_error_may_have_reached_worker(),
          "404: no pin or connection-lost detail");
    /* A success leaves the last error alone. */
    json = NULL;
    rc = decnet_client_health(client, &json);
    decnet_string_free(json);
    CHECK(rc == DECNET_OK && decnet_last_error_result() == DECNET_ERR_HTTP_STATUS &&
              decnet_last_error_http_status() == 404,
          "a successful call leaves the last error alone");
    /* The next failure replaces all of it. */
    json = NULL;
    rc = decnet_client_health(client, NULL);
    CHECK(rc == DECNET_ERR_NULL_ARGUMENT && decnet_last_error_http_status() == 0 &&
              decnet_last_error_http_body() == NULL,
          "a later failure clears the HTTP detail");

    cover("call", "decnet_client_teardown", NULL);
    RPC_OK("decnet_client_teardown(decky-01)", decnet_client_teardown(client, "decky-01", &json), json);
    CHECK(contains(json, "torn_down") && contains(json, "decky-01"), "teardown(decky-01): torn down");
    decnet_string_free(json);
    json = NULL;
    rc = decnet_client_teardown(client, NULL, &json);
    expect_null_allowed("decnet_client_teardown", "decky_id", rc);
    CHECK(contains(json, "\"decky_id\":null"), "teardown(NULL): everything");
    decnet_string_free(json);
    json = NULL;

    cover("call", "decnet_client_self_destruct", NULL);
    RPC_OK("decnet_client_self_destruct", decnet_client_self_destruct(client, &json), json);
    CHECK(contains(json, "self_destruct"), "self-destruct scheduled");
    decnet_string_free(json);
    json = NULL;

    /* Topology: start from "nothing applied" whatever earlier runs did. */
    cover("call", "decnet_client_topology_state", NULL);
    cover("call", "decnet_client_apply_topology", NULL);
    cover("call", "decnet_client_teardown_topology", NULL);
    RPC_OK("decnet_client_topology_state", decnet_client_topology_state(client, &json), json);
    char current[256];
    if (json != NULL && contains(json, "\"applied\":true") && json_string(json, "topology_id", current, sizeof current)) {
        char *gone = NULL;
        decnet_client_teardown_topology(client, current, &gone);
        decnet_string_free(gone);
    }
    decnet_string_free(json);
    json = NULL;

    const char *topology_a = "{\"topology\":{\"id\":\"ctest-a\"},\"deckies\":[{\"name\":\"d1\"}]}";
    const char *topology_b = "{\"topology\":{\"id\":\"ctest-b\"},\"deckies\":[]}";
    char *hash_a = NULL;
    expect_ok("decnet_topology_hash(topology A)", decnet_topology_hash(topology_a, &hash_a));
    rc = decnet_client_apply_topology(client, topology_a, NULL, &json);
    expect_null_allowed("decnet_client_apply_topology", "version_hash", rc);
    CHECK(contains(json, "applied") && hash_a != NULL && contains(json, hash_a),
          "apply_topology(version_hash=NULL) sends the canonical hash");
    decnet_string_free(json);
    json = NULL;
    RPC_OK("decnet_client_apply_topology(A, explicit hash) again",
                  decnet_client_apply_topology(client, topology_a, hash_a, &json), json);
    decnet_string_free(json);

    /* HTTP 409: a second, different topology. */
    json = SENTINEL;
    rc = decnet_client_apply_topology(client, topology_b, NULL, &json);
    expect_error("apply_topology(B while A is applied)", rc, DECNET_ERR_HTTP_STATUS, NULL);
    CHECK(json == NULL, "409: out_json left NULL");
    CHECK(decnet_last_error_http_status() == 409, fmt("409: status %u", (unsigned)decnet_last_error_http_status()));
    CHECK(same(decnet_last_error_http_body(), "{\"detail\":\"topology 'ctest-a' is already applied\"}"),
          fmt("409: body (got %s)", decnet_last_error_http_body() ? decnet_last_error_http_body() : "(null)"));
    CHECK(message_has("already applied"), "409: message has the detail");

    /* A wrong version hash is the worker's 400. */
    json = SENTINEL;
    rc = decnet_client_apply_topology(client, topology_a, EMPTY_TOPOLOGY_HASH, &json);
    expect_error("apply_topology(wrong version_hash)", rc, DECNET_ERR_HTTP_STATUS, NULL);
    CHECK(decnet_last_error_http_status() == 400 && contains(decnet_last_error_http_body(), "mismatch"),
          "wrong hash: HTTP 400 version_hash mismatch");

    RPC_OK("decnet_client_topology_state(applied)", decnet_client_topology_state(client, &json), json);
    CHECK(contains(json, "\"applied\":true") && contains(json, "ctest-a") && hash_a && contains(json, hash_a),
          "topology state: ctest-a applied with its hash");
    decnet_string_free(json);
    json = NULL;
    RPC_OK("decnet_client_teardown_topology(ctest-a)",
                  decnet_client_teardown_topology(client, "ctest-a", &json), json);
    CHECK(contains(json, "torn_down"), "teardown_topology: torn down");
    decnet_string_free(json);
    json = NULL;
    RPC_OK("decnet_client_topology_state(after teardown)", decnet_client_topology_state(client, &json), json);
    CHECK(contains(json, "\"applied\":false"), "topology state: nothing applied");
    decnet_string_free(json);
    decnet_string_free(hash_a);

    /* PROTOCOL: a 1-byte response cap. */
    expect_ok("set_max_response_bytes(1)", decnet_client_set_max_response_bytes(client, 1));
    json = SENTINEL;
    rc = decnet_client_health(client, &json);
    expect_error("health with a 1-byte response cap", rc, DECNET_ERR_PROTOCOL, NULL);
    CHECK(json == NULL && message_has("exceeds"), "1-byte cap: out NULL, message says the body exceeds it");
    expect_ok("set_max_response_bytes(16 MiB) again", decnet_client_set_max_response_bytes(client, 16u << 20));
    json = NULL;
    RPC_OK("health after lifting the cap", decnet_client_health(client, &json), json);
    decnet_string_free(json);
}

/* Network failures: CONNECT, TLS, PIN_MISMATCH, TIMEOUT, PROTOCOL,
 * CONNECTION_LOST. */
static void test_network_errors(const decnet_identity *identity) {
    decnet_result rc;
    decnet_client *client = NULL;
    char *json = NULL;

    /* CONNECT: a closed port. */
    unsigned short port = closed_port();
    rc = decnet_client_new(identity, "127.0.0.1", port, g_ok_pin, DECNET_HOSTNAME_OFF, &client);
    expect_ok("client for a closed port", rc);
    rc = decnet_client_connect(client);
    expect_error("connect to a closed port", rc, DECNET_ERR_CONNECT, NULL);
    CHECK(message_has(fmt("127.0.0.1:%u", (unsigned)port)), "CONNECT: message names host:port");
    json = SENTINEL;
    rc = decnet_client_health(client, &json);
    expect_error("health on a closed port", rc, DECNET_ERR_CONNECT, NULL);
    CHECK(json == NULL, "CONNECT: out_json left NULL");
    CHECK(!decnet_last_error_may_have_reached_worker(), "CONNECT: may_have_reached_worker false");
    CHECK(decnet_last_error_timeout_phase() == DECNET_TIMEOUT_PHASE_NONE, "CONNECT: not a timeout, phase NONE");
    decnet_client_free(client);
    client = NULL;

    /* TLS: an identity from another CA talking to the ok worker. */
    {
        decnet_identity *stranger = NULL;
        rc = decnet_identity_ensure(path_in(g_tmp, "other-ca"), &stranger);
        expect_ok("decnet_identity_ensure(fresh other CA)", rc);
        rc = decnet_client_new_from_host_json(stranger, g_host_ok, DECNET_HOSTNAME_ON, &client);
        expect_ok("client with the other CA's identity", rc);
        decnet_identity_free(stranger);
        rc = decnet_client_connect(client);
        expect_error("connect with another CA's identity", rc, DECNET_ERR_TLS, NULL);
        CHECK(message_has(fmt("%s:%u", g_ok_address, (unsigned)g_ok_port)), "TLS: message names host:port");
        json = SENTINEL;
        rc = decnet_client_health(client, &json);
        expect_error("health with another CA's identity", rc, DECNET_ERR_TLS, NULL);
        CHECK(json == NULL, "TLS: out_json left NULL");
        decnet_client_free(client);
        client = NULL;
    }

    /* PIN_MISMATCH: the ok worker, a wrong pin. */
    {
        const char *wrong = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        rc = decnet_client_new(identity, g_ok_address, g_ok_port, wrong, DECNET_HOSTNAME_ON, &client);
        expect_ok("client with a wrong pin", rc);
        rc = decnet_client_connect(client);
        expect_error("connect with a wrong pin", rc, DECNET_ERR_PIN_MISMATCH, NULL);
        CHECK(same(decnet_last_error_expected_fingerprint(), wrong), "PIN: expected fingerprint is the wrong pin");
        CHECK(same(decnet_last_error_actual_fingerprint(), g_ok_pin), "PIN: actual fingerprint is the worker's");
        json = SENTINEL;
        rc = decnet_client_health(client, &json);
        expect_error("health with a wrong pin", rc, DECNET_ERR_PIN_MISMATCH, NULL);
        CHECK(json == NULL, "PIN: out_json left NULL");
        CHECK(same(decnet_last_error_expected_fingerprint(), wrong) &&
                  same(decnet_last_error_actual_fingerprint(), g_ok_pin),
              "PIN (health): expected/actual fingerprints");
        CHECK(decnet_last_error_http_status() == 0 && decnet_last_error_http_body() == NULL,
              "PIN: no HTTP detail");
        decnet_client_free(client);
        client = NULL;

        /* The right pin in upper case with ':' separators is the same pin. */
        char spaced[200];
        size_t n = 0;
        for (size_t i = 0; i < 64; i++) {
            char c = g_ok_pin[i];
            spaced[n++] = (c >= 'a' && c <= 'f') ? (char)(c - 'a' + 'A') : c;
            if (i % 2 == 1 && i != 63) {
                spaced[n++] = ':';
            }
        }
        spaced[n] = '\0';
        rc = decnet_client_new(identity, g_ok_address, g_ok_port, spaced, DECNET_HOSTNAME_ON, &client);
        expect_ok("client with the pin as AA:BB:..", rc);
        json = NULL;
        RPC_OK("health with the AA:BB:.. pin", decnet_client_health(client, &json), json);
        decnet_string_free(json);
        decnet_client_free(client);
        client = NULL;
    }

    /* TIMEOUT: the stall worker with a 300 ms read timeout. */
    {
        rc = decnet_client_new_from_host_json(identity, g_host_stall, DECNET_HOSTNAME_ON, &client);
        expect_ok("client for the stall worker", rc);
        decnet_timeouts t;
        decnet_client_get_timeouts(client, DECNET_PROFILE_CONTROL, &t);
        t.read_ms = 300;
        expect_ok("set control read timeout 300 ms", decnet_client_set_timeouts(client, DECNET_PROFILE_CONTROL, &t));
        json = SENTINEL;
        double start = now_seconds();
        rc = decnet_client_health(client, &json);
        double elapsed = now_seconds() - start;
        expect_error("health on the stall worker", rc, DECNET_ERR_TIMEOUT, NULL);
        CHECK(json == NULL, "TIMEOUT: out_json left NULL");
        CHECK(message_has("read"), "TIMEOUT: message names the read phase");
        CHECK(elapsed < 10.0, fmt("TIMEOUT: gave up in %.2f s, well before the worker's 30 s", elapsed));
        /* The request had left when the answer timed out. */
        CHECK(decnet_last_error_may_have_reached_worker(), "TIMEOUT (read): may_have_reached_worker true");
        CHECK(decnet_last_error_timeout_phase() == DECNET_TIMEOUT_PHASE_READ,
              fmt("TIMEOUT: the phase getter says READ (got %d)", (int)decnet_last_error_timeout_phase()));
        decnet_client_free(client);
        client = NULL;
    }

    /* PROTOCOL: a 200 with an HTML body. */
    {
        rc = decnet_client_new_from_host_json(identity, g_host_nonjson, DECNET_HOSTNAME_ON, &client);
        expect_ok("client for the nonjson worker", rc);
        json = SENTINEL;
        rc = decnet_client_health(client, &json);
        expect_error("health on the nonjson worker", rc, DECNET_ERR_PROTOCOL, NULL);
        CHECK(json == NULL && message_has("not JSON"), "PROTOCOL: out NULL, message says not JSON");
        CHECK(decnet_last_error_timeout_phase() == DECNET_TIMEOUT_PHASE_NONE,
              "PROTOCOL after a TIMEOUT: the phase is NONE again");
        decnet_client_free(client);
        client = NULL;
    }

    /* CONNECTION_LOST: the close worker reads the request, then hangs up. */
    {
        rc = decnet_client_new_from_host_json(identity, g_host_close, DECNET_HOSTNAME_ON, &client);
        expect_ok("client for the close worker", rc);
        json = SENTINEL;
        rc = decnet_client_teardown(client, "decky-01", &json);
        expect_error("POST /teardown on the close worker", rc, DECNET_ERR_CONNECTION_LOST, NULL);
        CHECK(json == NULL, "CONNECTION_LOST: out_json left NULL");
        CHECK(decnet_last_error_may_have_reached_worker(), "CONNECTION_LOST (POST): may_have_reached_worker true");
        CHECK(message_has("may have reached"), "CONNECTION_LOST: the message says so too");
        json = SENTINEL;
        rc = decnet_client_health(client, &json);
        expect_error("GET /health on the close worker", rc, DECNET_ERR_CONNECTION_LOST, NULL);
        CHECK(json == NULL, "CONNECTION_LOST (GET): out_json left NULL");
        decnet_client_free(client);
        client = NULL;
    }
}

/* An identity freed while a client made from it is still in use. */
static void test_identity_freed_in_use(void) {
    decnet_identity *identity = NULL;
    decnet_client *client = NULL;
    char *json = NULL;
    const char *master = path_in(g_ca_dir, "master");
    decnet_result rc = decnet_identity_load(fmt("%s/ca.crt", master), fmt("%s/worker.crt", master),
                                            fmt("%s/worker.key", master), &identity);
    expect_ok("identity for the use-after-free check", rc);
    rc = decnet_client_new_from_host_json(identity, g_host_ok, DECNET_HOSTNAME_ON, &client);
    expect_ok("client for the use-after-free check", rc);
    RPC_OK("health before freeing the identity", decnet_client_health(client, &json), json);
    decnet_string_free(json);
    json = NULL;
    decnet_identity_free(identity); /* the client keeps its own reference */
    identity = NULL;
    RPC_OK("health after freeing the identity (pooled connection)", decnet_client_health(client, &json), json);
    decnet_string_free(json);
    json = NULL;
    /* Force new handshakes: a fresh client can't, so use connect(), which
     * opens and verifies a new connection with the freed identity's key. */
    expect_ok("connect after freeing the identity (new handshake)", decnet_client_connect(client));
    RPC_OK("status after freeing the identity", decnet_client_status(client, &json), json);
    decnet_string_free(json);
    decnet_client_free(client);
}

/* The last-error record is per thread. */
static void *other_thread(void *arg) {
    int *fresh = arg;
    *fresh = decnet_last_error_result() == DECNET_OK && decnet_last_error_message()[0] == '\0';
    char *out = NULL;
    decnet_result rc = decnet_topology_hash(NULL, &out);
    fresh[1] = rc == DECNET_ERR_NULL_ARGUMENT && message_names("hydrated_json");
    return NULL;
}

static void test_last_error_per_thread(void) {
    char *out = NULL;
    decnet_result rc = decnet_fingerprint_file(NULL, &out);
    (void)rc;
    int seen[2] = {0, 0};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, other_thread, seen) == 0, "start a second thread");
    pthread_join(thread, NULL);
    CHECK(seen[0], "another thread starts with an empty last error");
    CHECK(seen[1], "another thread records its own failure");
    CHECK(decnet_last_error_result() == DECNET_ERR_NULL_ARGUMENT && message_names("path"),
          "this thread's last error is untouched by the other thread's");
}

/* Every result code a C caller can get was provoked at least once;
 * INTERNAL and PANIC cannot be (see the top of the file). */
static void test_every_code_seen(void) {
    for (unsigned code = 1; code <= 14; code++) {
        if (code == DECNET_ERR_INTERNAL || code == DECNET_ERR_PANIC) {
            continue;
        }
        CHECK(g_seen[code], fmt("result %s (%u) was provoked from C", decnet_result_name(code), code));
    }
}

/* Every key the header requires was covered. */
static void test_coverage(void) {
    const char *list = getenv("BOUNDARY_COVERAGE");
    if (list == NULL || list[0] == '\0') {
        CHECK(false, "BOUNDARY_COVERAGE names the header's coverage list (run via tests/c/run.sh)");
        return;
    }
    FILE *f = fopen(list, "r");
    CHECK(f != NULL, fmt("open coverage list %s", list));
    if (f == NULL) {
        return;
    }
    char line[512];
    int required = 0, functions = 0, missing = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0') {
            continue;
        }
        required++;
        if (strncmp(line, "call ", 5) == 0) {
            functions++;
        }
        if (!covered(line)) {
            missing++;
            CHECK(false, fmt("coverage: \"%s\" is required by the header but not tested", line));
        }
    }
    fclose(f);
    CHECK(functions >= 30, fmt("coverage list has the header's functions (%d found)", functions));
    CHECK(missing == 0, fmt("coverage: all %d header requirements tested (%d missing)", required, missing));
    printf("coverage: %d requirements from the header (%d functions), %zu keys tested\n", required, functions,
           g_key_count);
}

#include "boundary_updater.h"
/* A fleet of the ok worker alone, or NULL (the failure is recorded). */
static decnet_fleet *fleet_of_ok_host(const decnet_identity *identity, const char *what) {
    char hosts[4096];
    snprintf(hosts, sizeof hosts, "[%s]", g_host_ok);
    decnet_fleet *fleet = NULL;
    decnet_result rc = decnet_fleet_new(identity, hosts, DECNET_HOSTNAME_ON, &fleet);
    expect_ok(fmt("fleet for %s", what), rc);
    return rc == DECNET_OK ? fleet : NULL;
}

#include "completions_boundary.h"
#include "fleet_boundary.h"
#include "updater_fleet_boundary.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CA_DIR HOSTS_DIR\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_ca_dir = argv[1];

    /* Fresh last error before anything can fail on this thread. */
    test_fresh_last_error();

    const char *tmpdir = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/decnet-boundary.XXXXXX", tmpdir && tmpdir[0] ? tmpdir : "/tmp");
    if (mkdtemp(g_tmp) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    /* The NULL ca_dir defaults resolve to $HOME/.decnet/ca: keep them in
     * the scratch dir, never the real home. */
    const char *home = path_in(g_tmp, "home");
    mkdir(home, 0700);
    setenv("HOME", home, 1);

    test_version_and_names();
    test_log_callback();
    test_free_null();
    test_identity();
    test_pki();
    test_fingerprint_and_hash();

    if (load_hosts(argv[2])) {
        decnet_identity *identity = NULL;
        decnet_result rc = decnet_identity_ensure(g_ca_dir, &identity);
        expect_ok("master identity for the client tests", rc);
        if (rc == DECNET_OK) {
            decnet_client *client = NULL;
            test_client_new(identity);
            rc = decnet_client_new_from_host_json(identity, g_host_ok, DECNET_HOSTNAME_ON, &client);
            expect_ok("client for the ok worker", rc);
            if (rc == DECNET_OK) {
                test_timeouts(client);
                test_rpc_arguments(client);
                test_rpcs(client);
            }
            decnet_client_free(client);
            test_updater_and_enroll(identity, argv[2]);
            test_network_errors(identity);
            test_completions_boundary(identity);
            test_fleet_boundary(identity);
            test_deploy_sharded_boundary(identity);
            decnet_identity_free(identity);
            test_identity_freed_in_use();
        }
    }
    test_last_error_per_thread();
    test_every_code_seen();
    test_coverage();

    free(g_host_ok);
    free(g_host_close);
    free(g_host_stall);
    free(g_host_nonjson);
    for (size_t i = 0; i < g_key_count; i++) {
        free(g_keys[i]);
    }
    remove_tree(g_tmp);
    free_kept();
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
