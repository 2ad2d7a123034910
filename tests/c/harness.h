/* A tiny test harness and a host blob store written in C, shared by the C tests. */
#ifndef DATASYNC_TEST_HARNESS_H
#define DATASYNC_TEST_HARNESS_H

#define _XOPEN_SOURCE 700

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "datasync.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                                \
    do {                                                                           \
        checks++;                                                                  \
        if (!(cond)) {                                                             \
            failures++;                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                          \
    } while (0)

/* Checks that a call returns `expected`, printing the library's message if not. */
#define CHECK_STATUS(call, expected)                                                      \
    do {                                                                                  \
        datasync_code got_ = (call);                                                    \
        checks++;                                                                         \
        if (got_ != (expected)) {                                                         \
            failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (%s)\n", __FILE__, __LINE__, \
                    #call, datasync_code_name(got_), datasync_code_name(expected),    \
                    datasync_error_message());                                       \
        }                                                                                 \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, DATASYNC_OK)

/* Whether `haystack` (may be NULL) contains `needle`. */
static inline int contains(const char *haystack, const char *needle) {
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

/* How many times `needle` occurs in `haystack`. */
static inline int occurrences(const char *haystack, const char *needle) {
    int n = 0;
    size_t len = strlen(needle);
    while (haystack != NULL && (haystack = strstr(haystack, needle)) != NULL) {
        n++;
        haystack += len;
    }
    return n;
}

static inline int finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, checks, failures);
    fflush(stdout);
    return failures == 0 ? 0 : 1;
}

/* ---- a thread-safe blob store (the host side of a persistence vtable) ---- */

typedef struct hentry {
    char *key;
    unsigned char *data;
    size_t len;
} hentry;

typedef struct hstore {
    pthread_mutex_t lock;
    hentry *items;
    size_t count;
    size_t cap;
    int fail_load;   /* non-zero: load returns this code */
    int fail_store;  /* non-zero: store returns this code */
    int destroyed;   /* destroy calls seen */
    int loads;
    int stores;
    int mutable_stores; /* of which not of a write-once piece ("!piece:...") or the
                         * format marker ("!datasync.format", the same bytes from
                         * every writer) */
    int store_ifs;   /* conditional writes seen */
    int store_if_refused; /* of which found other bytes and wrote nothing */
    int conditional; /* non-zero: the vtable offers store_if */
    int refuse_next; /* conditional writes to refuse as if another writer came first */
} hstore;

static inline void hstore_init(hstore *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
}

static inline void hstore_free(hstore *s) {
    for (size_t i = 0; i < s->count; i++) {
        free(s->items[i].key);
        free(s->items[i].data);
    }
    free(s->items);
    pthread_mutex_destroy(&s->lock);
}

static inline char *text_copy(const char *text) {
    size_t len = strlen(text) + 1;
    char *out = malloc(len);
    memcpy(out, text, len);
    return out;
}

static inline hentry *hstore_find(hstore *s, const char *key) {
    for (size_t i = 0; i < s->count; i++) {
        if (strcmp(s->items[i].key, key) == 0) return &s->items[i];
    }
    return NULL;
}

/* hstore_put with the lock held. */
static inline void hstore_put_locked(hstore *s, const char *key, const unsigned char *bytes, size_t len) {
    hentry *e = hstore_find(s, key);
    if (e == NULL) {
        if (s->count == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 8;
            s->items = realloc(s->items, s->cap * sizeof *s->items);
        }
        e = &s->items[s->count++];
        e->key = text_copy(key);
        e->data = NULL;
    }
    free(e->data);
    e->data = malloc(len ? len : 1);
    if (len) memcpy(e->data, bytes, len);
    e->len = len;
}

static inline void hstore_put(hstore *s, const char *key, const unsigned char *bytes, size_t len) {
    pthread_mutex_lock(&s->lock);
    hstore_put_locked(s, key, bytes, len);
    pthread_mutex_unlock(&s->lock);
}

static inline void hstore_put_text(hstore *s, const char *key, const char *text) {
    hstore_put(s, key, (const unsigned char *)text, strlen(text));
}

/* A NUL-terminated copy of the bytes under `key` (caller frees), or NULL. */
static inline char *hstore_get_text(hstore *s, const char *key) {
    pthread_mutex_lock(&s->lock);
    hentry *e = hstore_find(s, key);
    char *out = NULL;
    if (e != NULL) {
        out = malloc(e->len + 1);
        memcpy(out, e->data, e->len);
        out[e->len] = '\0';
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

/* What the store holds of partition `key`, in either format, as one NUL-terminated
 * text (caller frees), or NULL when it holds nothing of it: format 1's document
 * under `key`, or format 2's pieces (`!piece:<key>:<name>`), one after the other. */
static inline char *hstore_partition_text(hstore *s, const char *key) {
    char prefix[512];
    snprintf(prefix, sizeof prefix, "!piece:%s:", key);
    size_t plen = strlen(prefix), total = 0;
    char *out = NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->count; i++) {
        hentry *e = &s->items[i];
        if (strcmp(e->key, key) != 0 && strncmp(e->key, prefix, plen) != 0) continue;
        out = realloc(out, total + e->len + 1);
        memcpy(out + total, e->data, e->len);
        total += e->len;
        out[total] = '\0';
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

/* The default format of open_with (the library's, 2), or 1. */
static int harness_format = 2;

static inline int32_t hs_load(void *userdata, const char *key, datasync_bytes_sink *sink) {
    hstore *s = userdata;
    pthread_mutex_lock(&s->lock);
    s->loads++;
    int32_t rc = s->fail_load;
    if (rc == 0) {
        hentry *e = hstore_find(s, key);
        if (e != NULL && datasync_bytes_sink_write(sink, e->data, e->len) != DATASYNC_OK) rc = 99;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static inline int32_t hs_store(void *userdata, const char *key, const uint8_t *bytes, size_t len) {
    hstore *s = userdata;
    pthread_mutex_lock(&s->lock);
    s->stores++;
    if (strncmp(key, "!piece:", 7) != 0 && strcmp(key, "!datasync.format") != 0) s->mutable_stores++;
    int32_t rc = s->fail_store;
    pthread_mutex_unlock(&s->lock);
    if (rc == 0) hstore_put(s, key, bytes, len);
    return rc;
}

/* The conditional write: stores only if `key` holds `expected` (absent when NULL). */
static inline int32_t hs_store_if(void *userdata, const char *key, const uint8_t *expected,
                                  size_t expected_len, const uint8_t *bytes, size_t len,
                                  int32_t *stored) {
    hstore *s = userdata;
    pthread_mutex_lock(&s->lock);
    s->store_ifs++;
    int32_t rc = s->fail_store;
    if (rc == 0) {
        hentry *e = hstore_find(s, key);
        int same = expected == NULL
                       ? e == NULL
                       : e != NULL && e->len == expected_len && memcmp(e->data, expected, expected_len) == 0;
        if (same && s->refuse_next > 0) {
            s->refuse_next--;
            same = 0;
        }
        if (same) {
            hstore_put_locked(s, key, bytes, len);
        } else {
            s->store_if_refused++;
        }
        *stored = same;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static inline int32_t hs_clear(void *userdata, const char *key) {
    hstore *s = userdata;
    pthread_mutex_lock(&s->lock);
    hentry *e = hstore_find(s, key);
    if (e != NULL) {
        free(e->key);
        free(e->data);
        *e = s->items[--s->count];
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static inline int32_t hs_keys(void *userdata, datasync_bytes_sink *sink) {
    hstore *s = userdata;
    int32_t rc = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->count && rc == 0; i++) {
        if (datasync_bytes_sink_write_str(sink, s->items[i].key) != DATASYNC_OK) rc = 98;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static inline void hs_destroy(void *userdata) {
    hstore *s = userdata;
    pthread_mutex_lock(&s->lock);
    s->destroyed++;
    pthread_mutex_unlock(&s->lock);
}

static inline int hstore_destroyed(hstore *s) {
    pthread_mutex_lock(&s->lock);
    int n = s->destroyed;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static inline void hstore_fail(hstore *s, int load, int store) {
    pthread_mutex_lock(&s->lock);
    s->fail_load = load;
    s->fail_store = store;
    pthread_mutex_unlock(&s->lock);
}

/* The vtable for `s`; the store outlives every instance using it. */
static inline datasync_persistence_vtable hstore_vtable(hstore *s) {
    datasync_persistence_vtable vt;
    memset(&vt, 0, sizeof vt);
    vt.userdata = s;
    vt.load = hs_load;
    vt.store = hs_store;
    vt.clear = hs_clear;
    vt.keys = hs_keys;
    vt.destroy = hs_destroy;
    if (s->conditional) vt.store_if = hs_store_if;
    return vt;
}

/* Opens an instance with prefix `prefix`, a host local tier `local` and, when not
 * NULL, a host cloud tier `cloud`; syncs only when asked. */
static inline datasync_instance *open_with(const char *prefix, hstore *local, hstore *cloud) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    if (datasync_config_new(prefix, &cfg) != DATASYNC_OK) return NULL;
    if (local != NULL) {
        datasync_persistence_vtable vt = hstore_vtable(local);
        datasync_config_set_persistence(cfg, DATASYNC_TIER_LOCAL, &vt);
    }
    if (cloud != NULL) {
        datasync_persistence_vtable vt = hstore_vtable(cloud);
        datasync_config_set_persistence(cfg, DATASYNC_TIER_CLOUD, &vt);
    }
    datasync_config_set_cloud_sync_interval(cfg, 3600 * 1000);
    datasync_config_set_sync_on_open(cfg, false);
    datasync_config_set_format(cfg, (uint32_t)harness_format);
    if (datasync_instance_open(cfg, &ds) != DATASYNC_OK) {
        fprintf(stderr, "open failed: %s\n", datasync_error_message());
        return NULL;
    }
    return ds;
}

#endif
