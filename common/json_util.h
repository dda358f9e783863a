/* json_util.h — checks cJSON does not make: a "\u0000" escape (cJSON
 * decodes it into a C string that ends there, so "a\u0000b" would read as
 * "a" and could shadow a real key), and duplicate keys (cJSON keeps both
 * and lookups see the first, where Python's json keeps the last). */
#ifndef TC_JSON_UTIL_H
#define TC_JSON_UTIL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <string.h>

/* whether JSON text t[0..n) holds a \u0000 escape (backslashes only occur
 * inside strings in valid JSON, and each escapes the next character) */
static inline int tc_json_has_nul_escape(const char *t, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (t[i] != '\\') continue;
        if (t[i + 1] == 'u' && i + 5 < n && t[i + 2] == '0' && t[i + 3] == '0' && t[i + 4] == '0' && t[i + 5] == '0')
            return 1;
        i++; /* the escaped character */
    }
    return 0;
}

/* the first key of object o that appears twice in it, or NULL (quadratic:
 * for small objects such as config.json) */
static inline const char *tc_json_dup_key(const cJSON *o) {
    for (const cJSON *a = o ? o->child : NULL; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (a->string && b->string && strcmp(a->string, b->string) == 0) return a->string;
    return NULL;
}

/* whether t[0..n) is JSON whitespace only */
static inline int tc_json_only_space(const char *t, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (t[i] != ' ' && t[i] != '\t' && t[i] != '\n' && t[i] != '\r') return 0;
    return 1;
}

#endif
