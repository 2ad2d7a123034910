/* Change-set observers: a copy kept by applying every change set equals a fresh
 * query after each random burst of saves, deletes and syncs from another device
 * (four queries, sorted and paged), and one update in a large collection hands the
 * callback a few hundred bytes, not the collection. */
#include "harness.h"

/* ---- the copy: entities as JSON text, in result order ---- */

typedef struct row {
    char *id;
    char *json;
} row;

typedef struct copy {
    pthread_mutex_t lock;
    row *rows;
    size_t count;
    size_t cap;
    int emissions;
    int bad;              /* emissions whose count did not match the copy */
    size_t last_len;      /* bytes handed to the last call */
    int destroyed;
} copy;

static void copy_init(copy *c) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
}

static void copy_free(copy *c) {
    for (size_t i = 0; i < c->count; i++) {
        free(c->rows[i].id);
        free(c->rows[i].json);
    }
    free(c->rows);
    pthread_mutex_destroy(&c->lock);
}

static char *slice(const char *from, size_t len) {
    char *out = malloc(len + 1);
    memcpy(out, from, len);
    out[len] = '\0';
    return out;
}

/* The end of the JSON string starting at `p` (at its opening quote): just past the closing quote. */
static const char *string_end(const char *p) {
    for (p++; *p && *p != '"'; p++) {
        if (*p == '\\' && p[1]) p++;
    }
    return *p ? p + 1 : p;
}

/* The end of the JSON object starting at `p` (at its `{`): just past the matching `}`. */
static const char *object_end(const char *p) {
    int depth = 0;
    while (*p) {
        if (*p == '"') {
            p = string_end(p);
            continue;
        }
        if (*p == '{' || *p == '[') depth++;
        if (*p == '}' || *p == ']') {
            depth--;
            if (depth == 0) return p + 1;
        }
        p++;
    }
    return p;
}

/* The id of an entity's JSON text (caller frees), or NULL. */
static char *entity_id(const char *json) {
    const char *p = strstr(json, "\"id\":\"");
    if (p == NULL) return NULL;
    p += 5;
    return slice(p + 1, (size_t)(string_end(p) - p - 2));
}

static void copy_remove(copy *c, const char *id) {
    size_t kept = 0;
    for (size_t i = 0; i < c->count; i++) {
        if (strcmp(c->rows[i].id, id) == 0) {
            free(c->rows[i].id);
            free(c->rows[i].json);
        } else {
            c->rows[kept++] = c->rows[i];
        }
    }
    c->count = kept;
}

static void copy_insert(copy *c, size_t position, char *id, char *json) {
    if (c->count == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->rows = realloc(c->rows, c->cap * sizeof *c->rows);
    }
    if (position > c->count) position = c->count;
    memmove(c->rows + position + 1, c->rows + position, (c->count - position) * sizeof *c->rows);
    c->rows[position] = (row){id, json};
    c->count++;
}

/* Applies one change set: removes `removed` and the upserted ids, then inserts each upsert. */
static void apply_changes(copy *c, const char *doc) {
    const char *removed = strstr(doc, "\"removed\":[");
    const char *upserted = strstr(doc, "\"upserted\":[");
    const char *count = strstr(doc, "\"count\":");
    if (removed == NULL || upserted == NULL || count == NULL) {
        c->bad++;
        return;
    }
    for (const char *p = removed + 11; *p == '"' || *p == ',';) {
        if (*p == ',') {
            p++;
            continue;
        }
        const char *end = string_end(p);
        char *id = slice(p + 1, (size_t)(end - p - 2));
        copy_remove(c, id);
        free(id);
        p = end;
    }
    for (const char *p = strstr(upserted, "\"entity\":"); p != NULL; p = strstr(p, "\"entity\":")) {
        p += 9;
        const char *end = object_end(p);
        char *json = slice(p, (size_t)(end - p));
        char *id = entity_id(json);
        copy_remove(c, id);
        free(id);
        free(json);
        p = end;
    }
    for (const char *p = strstr(upserted, "{\"position\":"); p != NULL; p = strstr(p, "{\"position\":")) {
        size_t position = strtoul(p + 12, NULL, 10);
        const char *entity = strstr(p, "\"entity\":") + 9;
        const char *end = object_end(entity);
        char *json = slice(entity, (size_t)(end - entity));
        copy_insert(c, position, entity_id(json), json);
        p = end;
    }
    if (strtoul(count + 8, NULL, 10) != c->count) c->bad++;
}

static void on_changes(void *userdata, const char *json, size_t len) {
    copy *c = userdata;
    pthread_mutex_lock(&c->lock);
    c->emissions++;
    c->last_len = len;
    apply_changes(c, json);
    pthread_mutex_unlock(&c->lock);
}

static void on_destroy(void *userdata) {
    copy *c = userdata;
    pthread_mutex_lock(&c->lock);
    c->destroyed++;
    pthread_mutex_unlock(&c->lock);
}

/* The copy as a JSON array, the shape datasync_entity_query writes (caller frees). */
static char *copy_json(copy *c) {
    pthread_mutex_lock(&c->lock);
    size_t len = 2;
    for (size_t i = 0; i < c->count; i++) len += strlen(c->rows[i].json) + 1;
    char *out = malloc(len + 1);
    char *p = out;
    *p++ = '[';
    for (size_t i = 0; i < c->count; i++) {
        if (i) *p++ = ',';
        size_t n = strlen(c->rows[i].json);
        memcpy(p, c->rows[i].json, n);
        p += n;
    }
    *p++ = ']';
    *p = '\0';
    pthread_mutex_unlock(&c->lock);
    return out;
}

static datasync_instance *open_device(const char *prefix, const datasync_memory *cloud) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    if (datasync_config_new(prefix, &cfg) != DATASYNC_OK) return NULL;
    datasync_config_set_memory(cfg, DATASYNC_TIER_LOCAL, NULL);
    if (cloud != NULL) {
        datasync_config_set_memory(cfg, DATASYNC_TIER_CLOUD, cloud);
        datasync_config_set_cloud_sync_interval(cfg, 3600 * 1000);
    }
    if (datasync_instance_open(cfg, &ds) != DATASYNC_OK) return NULL;
    return ds;
}

/* A small seeded generator: the same bursts on every run. */
static unsigned long long rng_state = 14;
static unsigned rnd(unsigned below) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)((rng_state >> 33) % below);
}

#define QUERIES 4
static const char *const queries[QUERIES] = {
    "{}",
    "{\"sort\":[\"rank:desc\",\"name\"]}",
    "{\"where\":{\"team\":\"core\"},\"sort\":[\"rank\"],\"limit\":7}",
    "{\"sort\":[\"name\"],\"limit\":5,\"offset\":3}",
};

static void test_random_bursts_match_a_fresh_query(void) {
    datasync_memory *cloud = NULL;
    CHECK_OK(datasync_memory_new(&cloud));
    datasync_instance *here = open_device("app", cloud);
    datasync_instance *there = open_device("app", cloud);
    CHECK(here != NULL && there != NULL);

    copy copies[QUERIES];
    datasync_subscription *subs[QUERIES];
    for (int q = 0; q < QUERIES; q++) {
        copy_init(&copies[q]);
        datasync_observer ob = {&copies[q], on_changes, on_destroy};
        CHECK_OK(datasync_entity_observe_changes(here, "Task", queries[q], &ob, &subs[q]));
    }

    char *known[400];
    size_t nknown = 0;
    for (int burst = 0; burst < 25; burst++) {
        unsigned writes = 1 + rnd(12);
        for (unsigned w = 0; w < writes; w++) {
            datasync_instance *who = rnd(10) < 7 ? here : there;
            unsigned roll = rnd(10);
            char entity[200];
            if (roll < 5 || nknown == 0) {
                snprintf(entity, sizeof entity, "{\"name\":\"n%u\",\"rank\":%u,\"team\":\"%s\"}", rnd(41), rnd(10),
                         rnd(2) ? "core" : "web");
                char *id = NULL;
                CHECK_OK(datasync_entity_save(who, "Task", entity, &id));
                if (nknown < sizeof known / sizeof *known) known[nknown++] = id;
                else datasync_string_free(id);
            } else if (roll < 8) {
                snprintf(entity, sizeof entity, "{\"id\":\"%s\",\"name\":\"n%u\",\"rank\":%u,\"team\":\"%s\"}",
                         known[rnd((unsigned)nknown)], rnd(41), rnd(10), rnd(2) ? "core" : "web");
                CHECK_OK(datasync_entity_save(who, "Task", entity, NULL));
            } else {
                CHECK_OK(datasync_entity_delete(who, "Task", known[rnd((unsigned)nknown)], NULL));
            }
        }
        if (rnd(2)) {
            CHECK_OK(datasync_instance_sync_now(there, NULL));
            CHECK_OK(datasync_instance_sync_now(here, NULL));
        }
        CHECK_OK(datasync_instance_drain_events(here));
        for (int q = 0; q < QUERIES; q++) {
            char *fresh = NULL;
            CHECK_OK(datasync_entity_query(here, "Task", queries[q], &fresh));
            char *mine = copy_json(&copies[q]);
            if (fresh == NULL || strcmp(fresh, mine) != 0) {
                CHECK(!"the applied copy equals a fresh query");
                fprintf(stderr, "burst %d, query %s:\n  copy  %s\n  query %s\n", burst, queries[q], mine,
                        fresh ? fresh : "(null)");
            }
            free(mine);
            datasync_string_free(fresh);
        }
    }
    for (int q = 0; q < QUERIES; q++) {
        datasync_subscription_free(subs[q]);
        CHECK(copies[q].emissions > 1);
        CHECK(copies[q].bad == 0);
        CHECK(copies[q].destroyed == 1);
        copy_free(&copies[q]);
    }
    for (size_t i = 0; i < nknown; i++) datasync_string_free(known[i]);
    datasync_instance_free(there);
    datasync_instance_free(here);
    datasync_memory_free(cloud);
}

/* 5,000 rather than 100,000: every C test runs under ASan and again under valgrind
 * against the debug library, where building and serialising 100,000 entities takes
 * minutes. The Python and Kotlin tests count the same thing at 100,000. */
#define LARGE 5000

static void test_one_update_hands_over_one_entity(void) {
    datasync_instance *ds = open_device("big", NULL);
    size_t cap = (size_t)LARGE * 40 + 2;
    char *array = malloc(cap);
    size_t len = 0;
    array[len++] = '[';
    for (int i = 0; i < LARGE; i++) {
        len += (size_t)snprintf(array + len, cap - len, "%s{\"n\":%d,\"label\":\"item %d\"}", i ? "," : "", i, i);
    }
    array[len++] = ']';
    array[len] = '\0';
    char *ids = NULL;
    CHECK_OK(datasync_entity_save_many(ds, "Item", array, &ids));
    free(array);

    copy c;
    copy_init(&c);
    datasync_observer ob = {&c, on_changes, on_destroy};
    datasync_subscription *sub = NULL;
    CHECK_OK(datasync_entity_observe_changes(ds, "Item", "{\"sort\":[\"n\"]}", &ob, &sub));
    CHECK_OK(datasync_instance_drain_events(ds));
    CHECK(c.emissions == 1 && c.count == LARGE && c.last_len > (size_t)LARGE * 50);

    /* The 1000th id in the array of ids: "[\"Item.x\",...". */
    const char *p = ids;
    for (int i = 0; i < 1000; i++) p = strchr(p + 1, ',');
    char *id = slice(p + 2, (size_t)(strchr(p + 2, '"') - p - 2));
    char update[200];
    snprintf(update, sizeof update, "{\"id\":\"%s\",\"n\":-1,\"label\":\"changed\"}", id);
    CHECK_OK(datasync_entity_save(ds, "Item", update, NULL));
    CHECK_OK(datasync_instance_drain_events(ds));
    CHECK(c.emissions == 2);
    CHECK(c.last_len < 1024);
    CHECK(c.count == LARGE && strcmp(c.rows[0].id, id) == 0 && c.bad == 0);

    datasync_subscription_free(sub);
    free(id);
    datasync_string_free(ids);
    copy_free(&c);
    datasync_instance_free(ds);
}

int main(void) {
    test_random_bursts_match_a_fresh_query();
    test_one_update_hands_over_one_entity();
    return finish("test_changes");
}
