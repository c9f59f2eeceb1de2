/* read_file.h -- the one file reader the C tests share. */
#ifndef DECNET_TESTS_READ_FILE_H
#define DECNET_TESTS_READ_FILE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a whole file into a NUL-terminated buffer the caller frees; an empty
 * file gives "", a missing or unreadable one NULL. */
static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
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
    if (text == NULL) {
        text = calloc(1, 1);
    } else {
        text[used] = '\0';
    }
    return text;
}

#endif /* DECNET_TESTS_READ_FILE_H */
