/* Sync between two instances through a cloud store written in C: copies,
 * convergence, idempotence, conflict rules, a host resolver, an offline cloud. */
#include "harness.h"

/* Extracts an integer field from stats JSON (-1 when absent). */
static long stat_of(const char *json, const char *field) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\":", field);
    const char *at = json ? strstr(json, needle) : NULL;
    return at ? strtol(at + strlen(needle), NULL, 10) : -1;
}

static char *sync_stats(datasync_instance *ds) {
    char *stats = NULL;
    CHECK_OK(datasync_instance_sync_now(ds, &stats));
    return stats;
}

static char *get(datasync_instance *ds, const char *name, const char *id) {
    char *json = NULL;
    CHECK_OK(datasync_entity_get(ds, name, id, &json));
    return json;
}

static void check_audit(datasync_instance *ds) {
    char *audit = NULL;
    CHECK_OK(datasync_instance_audit(ds, &audit));
    CHECK(audit != NULL && strcmp(audit, "[]") == 0);
    if (audit && strcmp(audit, "[]") != 0) fprintf(stderr, "audit: %s\n", audit);
    datasync_string_free(audit);
}

/* Format 1: the stores hold the same partition document. Format 2: each holds the
 * partition's index (the writes in it are compared by the audits and reads). */
static void check_same_partition(hstore *a, hstore *b, hstore *c, const char *key) {
    hstore *all[3] = {a, b, c};
    char *first = NULL;
    for (int i = 0; i < 3 && all[i] != NULL; i++) {
        if (harness_format == 1) {
            char *text = hstore_get_text(all[i], key);
            CHECK(text != NULL && (first == NULL || strcmp(first, text) == 0));
            if (first == NULL) first = text; else free(text);
        } else {
            char index[512];
            snprintf(index, sizeof index, "!index:%s", key);
            char *text = hstore_get_text(all[i], index);
            CHECK(text != NULL && hstore_get_text(all[i], key) == NULL);
            free(text);
        }
    }
    free(first);
}

static void test_two_devices(void) {
    hstore cloud, local_a, local_b;
    hstore_init(&cloud);
    hstore_init(&local_a);
    hstore_init(&local_b);
    datasync_instance *a = open_with("app", &local_a, &cloud);
    datasync_instance *b = open_with("app", &local_b, &cloud);
    CHECK(a != NULL && b != NULL);

    char *alice = NULL, *bob = NULL;
    CHECK_OK(datasync_entity_save(a, "User", "{\"name\":\"Alice\"}", &alice));
    CHECK_OK(datasync_entity_save(a, "User", "{\"name\":\"Bob\"}", &bob));

    char *stats = sync_stats(a);
    CHECK(stat_of(stats, "keys_copied") >= 1 && contains(stats, "\"offline\":false"));
    datasync_string_free(stats);
    char *blob = hstore_partition_text(&cloud, "app.User");
    CHECK(contains(blob, "Alice") && contains(blob, "Bob"));
    free(blob);

    stats = sync_stats(b);
    CHECK(stat_of(stats, "entities_changed") >= 0);
    datasync_string_free(stats);
    char *json = get(b, "User", alice);
    CHECK(contains(json, "Alice"));
    datasync_string_free(json);

    /* Concurrent edits of Alice, then B edits Bob and A deletes him: after syncing,
     * both devices agree (which rule picks the winner: test_last_writer_wins, with
     * explicit instants). */
    char edit[200];
    snprintf(edit, sizeof edit, "{\"id\":\"%s\",\"name\":\"Alice (A)\"}", alice);
    CHECK_OK(datasync_entity_save(a, "User", edit, NULL));
    snprintf(edit, sizeof edit, "{\"id\":\"%s\",\"name\":\"Alice (B)\"}", alice);
    CHECK_OK(datasync_entity_save(b, "User", edit, NULL));
    /* B edits Bob, then A deletes him: deleted everywhere (a delete wins when it is
     * later and when it is at the same instant). */
    snprintf(edit, sizeof edit, "{\"id\":\"%s\",\"name\":\"Bob (B)\"}", bob);
    CHECK_OK(datasync_entity_save(b, "User", edit, NULL));
    CHECK_OK(datasync_entity_delete(a, "User", bob, NULL));

    datasync_string_free(sync_stats(a));
    stats = sync_stats(b);
    if (harness_format == 1) CHECK(stat_of(stats, "conflicts") >= 1); /* format 2 resolves at read */
    datasync_string_free(stats);
    datasync_string_free(sync_stats(a));

    char *ja = get(a, "User", alice);
    char *jb = get(b, "User", alice);
    CHECK(ja != NULL && jb != NULL && strcmp(ja, jb) == 0);
    CHECK(contains(ja, "Alice (A)") || contains(ja, "Alice (B)"));
    datasync_string_free(ja);
    datasync_string_free(jb);
    json = get(a, "User", bob);
    CHECK(json == NULL);
    datasync_string_free(json);
    json = get(b, "User", bob);
    CHECK(json == NULL);
    datasync_string_free(json);

    /* Converged: same partition bytes everywhere (format 1; format 2 holds the same
     * writes in pieces, checked by the audits), metadata true. */
    check_same_partition(&local_a, &local_b, &cloud, "app.User");
    check_audit(a);
    check_audit(b);

    /* Every tier lists the one partition; a tier B lacks or no tier at all is refused. */
    char *keys = NULL;
    CHECK_OK(datasync_instance_tier_keys(a, DATASYNC_TIER_CLOUD, &keys));
    CHECK(keys != NULL && strcmp(keys, "[\"app.User\"]") == 0);
    datasync_string_free(keys);
    CHECK_OK(datasync_instance_tier_keys(b, DATASYNC_TIER_LOCAL, &keys));
    CHECK(keys != NULL && strcmp(keys, "[\"app.User\"]") == 0);
    datasync_string_free(keys);
    CHECK_OK(datasync_instance_tier_keys(b, DATASYNC_TIER_STORE, &keys));
    CHECK(keys != NULL && strcmp(keys, "[\"app.User\"]") == 0);
    datasync_string_free(keys);
    keys = NULL;
    CHECK_STATUS(datasync_instance_tier_keys(a, 7, &keys), DATASYNC_INVALID_ARGUMENT);
    CHECK_STATUS(datasync_instance_tier_keys(a, DATASYNC_TIER_CLOUD, NULL), DATASYNC_NULL_ARGUMENT);
    CHECK(keys == NULL);

    stats = sync_stats(a);
    CHECK(stat_of(stats, "keys_copied") == 0 && stat_of(stats, "keys_merged") == 0 &&
          stat_of(stats, "entities_changed") == 0);
    datasync_string_free(stats);

    /* An unreachable cloud: sync reports offline, the instance keeps working. */
    hstore_fail(&cloud, 5, 5);
    CHECK_OK(datasync_entity_save(a, "User", "{\"name\":\"Offline Olga\"}", NULL));
    stats = sync_stats(a);
    CHECK(contains(stats, "\"offline\":true") && contains(stats, "host load callback returned 5"));
    datasync_string_free(stats);
    char *status = NULL;
    CHECK_OK(datasync_instance_status(a, &status));
    CHECK(contains(status, "\"online\":false") && contains(status, "\"failures\":1"));
    datasync_string_free(status);
    CHECK_OK(datasync_entity_query(a, "User", "{\"where\":{\"name\":\"Offline Olga\"}}", &json));
    CHECK(occurrences(json, "\"id\":") == 1);
    datasync_string_free(json);
    hstore_fail(&cloud, 0, 0);
    datasync_string_free(sync_stats(a));
    CHECK_OK(datasync_instance_status(a, &status));
    CHECK(contains(status, "\"online\":true"));
    datasync_string_free(status);
    datasync_string_free(sync_stats(b));
    CHECK_OK(datasync_entity_query(b, "User", "{\"where\":{\"name\":\"Offline Olga\"}}", &json));
    CHECK(occurrences(json, "\"id\":") == 1);
    datasync_string_free(json);

    datasync_instance_free(a);
    datasync_instance_free(b);
    CHECK(hstore_destroyed(&cloud) == 2 && hstore_destroyed(&local_a) == 1 && hstore_destroyed(&local_b) == 1);
    datasync_string_free(alice);
    datasync_string_free(bob);
    hstore_free(&cloud);
    hstore_free(&local_a);
    hstore_free(&local_b);
}

/* Equal instants, set up by writing partitions (in canonical form: keys sorted, no
 * whitespace) straight into the host stores (the
 * library rebuilds the missing metadata from `keys`): a delete beats an edit made
 * at the same instant, and between two edits at the same instant the greater
 * version wins. */
static void test_tie_rules(void) {
    hstore cloud, local;
    hstore_init(&cloud);
    hstore_init(&local);
    const char *at = "2026-01-01T00:00:00.000Z";
    char text[1024];
    snprintf(text, sizeof text,
             "{\"Item\":{\"Item.aaaaaaaaaaaaaaaa\":{\"id\":\"Item.aaaaaaaaaaaaaaaa\",\"updatedAt\":\"%s\",\"v\":\"local\",\"version\":3},"
             "\"Item.bbbbbbbbbbbbbbbb\":{\"id\":\"Item.bbbbbbbbbbbbbbbb\",\"updatedAt\":\"%s\",\"v\":\"local\",\"version\":2}}}",
             at, at);
    hstore_put_text(&local, "tie.Item", text);
    snprintf(text, sizeof text,
             "{\"Item\":{\"Item.bbbbbbbbbbbbbbbb\":{\"id\":\"Item.bbbbbbbbbbbbbbbb\",\"updatedAt\":\"%s\",\"v\":\"cloud\",\"version\":5}},"
             "\"deleted\":{\"Item\":{\"Item.aaaaaaaaaaaaaaaa\":\"%s\"}}}",
             at, at);
    hstore_put_text(&cloud, "tie.Item", text);

    datasync_instance *ds = open_with("tie", &local, &cloud);
    CHECK(ds != NULL);
    char *stats = sync_stats(ds);
    if (harness_format == 1) CHECK(stat_of(stats, "conflicts") == 2);
    datasync_string_free(stats);
    char *json = get(ds, "Item", "Item.aaaaaaaaaaaaaaaa");
    CHECK(json == NULL);
    datasync_string_free(json);
    json = get(ds, "Item", "Item.bbbbbbbbbbbbbbbb");
    CHECK(contains(json, "\"v\":\"cloud\"") && contains(json, "\"version\":5"));
    datasync_string_free(json);
    check_same_partition(&local, &cloud, NULL, "tie.Item");
    check_audit(ds);
    datasync_instance_free(ds);
    hstore_free(&cloud);
    hstore_free(&local);
}

/* Last writer wins, with instants set explicitly by writing partitions straight
 * into the host stores (canonical form; the library rebuilds the missing metadata
 * from `keys`). Each later version has the lower version number and the smaller
 * bytes, so the equal-instant tie-break would pick the other one: only
 * last-writer-wins gives these results.
 * - aaaa: A edited at T0 (version 9), B edited 1 ms later (version 2): B's wins.
 * - bbbb: B deleted at T0, A edited 1 ms later: the later edit beats the delete
 *   (at equal instants the delete would win, test_tie_rules).
 * - cccc: B edited at T0 (version 9), A deleted 1 ms later: the delete wins. */
static void test_last_writer_wins(void) {
    hstore cloud, local_a, local_b;
    hstore_init(&cloud);
    hstore_init(&local_a);
    hstore_init(&local_b);
    const char *t0 = "2026-01-01T00:00:00.000Z", *t1 = "2026-01-01T00:00:00.001Z";
    char text[1024];
    snprintf(text, sizeof text,
             "{\"Item\":{\"Item.aaaaaaaaaaaaaaaa\":{\"id\":\"Item.aaaaaaaaaaaaaaaa\",\"updatedAt\":\"%s\",\"v\":\"zz older\",\"version\":9},"
             "\"Item.bbbbbbbbbbbbbbbb\":{\"id\":\"Item.bbbbbbbbbbbbbbbb\",\"updatedAt\":\"%s\",\"v\":\"edit after delete\",\"version\":1}},"
             "\"deleted\":{\"Item\":{\"Item.cccccccccccccccc\":\"%s\"}}}",
             t0, t1, t1);
    hstore_put_text(&local_a, "lww.Item", text);
    snprintf(text, sizeof text,
             "{\"Item\":{\"Item.aaaaaaaaaaaaaaaa\":{\"id\":\"Item.aaaaaaaaaaaaaaaa\",\"updatedAt\":\"%s\",\"v\":\"aa newer\",\"version\":2},"
             "\"Item.cccccccccccccccc\":{\"id\":\"Item.cccccccccccccccc\",\"updatedAt\":\"%s\",\"v\":\"zz\",\"version\":9}},"
             "\"deleted\":{\"Item\":{\"Item.bbbbbbbbbbbbbbbb\":\"%s\"}}}",
             t1, t0, t0);
    hstore_put_text(&local_b, "lww.Item", text);

    datasync_instance *a = open_with("lww", &local_a, &cloud);
    datasync_instance *b = open_with("lww", &local_b, &cloud);
    CHECK(a != NULL && b != NULL);
    datasync_string_free(sync_stats(a)); /* A's partition reaches the cloud */
    char *stats = sync_stats(b);         /* B merges it with its own */
    if (harness_format == 1) CHECK(stat_of(stats, "conflicts") == 3);
    datasync_string_free(stats);
    datasync_string_free(sync_stats(a)); /* A takes the merge */

    datasync_instance *both[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        char *json = get(both[i], "Item", "Item.aaaaaaaaaaaaaaaa");
        CHECK(contains(json, "\"v\":\"aa newer\"") && contains(json, t1));
        datasync_string_free(json);
        json = get(both[i], "Item", "Item.bbbbbbbbbbbbbbbb");
        CHECK(contains(json, "\"v\":\"edit after delete\""));
        datasync_string_free(json);
        json = get(both[i], "Item", "Item.cccccccccccccccc");
        CHECK(json == NULL);
        datasync_string_free(json);
    }
    check_same_partition(&local_a, &local_b, &cloud, "lww.Item");
    check_audit(a);
    check_audit(b);
    datasync_instance_free(a);
    datasync_instance_free(b);
    hstore_free(&cloud);
    hstore_free(&local_a);
    hstore_free(&local_b);
}

/* A host resolver: the version with the greater "priority" wins, whatever its time
 * (ties: the later, as last-writer-wins would pick; a tombstone never wins). */
typedef struct {
    pthread_mutex_t lock;
    int calls;
    int destroyed;
} resolver_state;

static long priority_of(const char *version) {
    const char *p = strstr(version, "\"priority\":");
    return p ? strtol(p + 11, NULL, 10) : -1;
}

static int32_t by_priority(void *userdata, const char *entity_name, const char *a_json, size_t a_len,
                           const char *b_json, size_t b_len, datasync_bytes_sink *out) {
    resolver_state *st = userdata;
    pthread_mutex_lock(&st->lock);
    st->calls++;
    pthread_mutex_unlock(&st->lock);
    if (strcmp(entity_name, "Job") != 0) return 1;
    if (strlen(a_json) != a_len || strlen(b_json) != b_len) return 2;
    long pa = priority_of(a_json), pb = priority_of(b_json);
    int pick_a = pa > pb || (pa == pb && strcmp(a_json, b_json) > 0);
    const char *win = pick_a ? a_json : b_json;
    size_t len = pick_a ? a_len : b_len;
    return datasync_bytes_sink_write(out, (const uint8_t *)win, len) == DATASYNC_OK ? 0 : 3;
}

static void resolver_destroy(void *userdata) {
    resolver_state *st = userdata;
    pthread_mutex_lock(&st->lock);
    st->destroyed++;
    pthread_mutex_unlock(&st->lock);
}

static datasync_instance *open_resolving(hstore *cloud, resolver_state *st) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    CHECK_OK(datasync_config_new("jobs", &cfg));
    CHECK_OK(datasync_config_set_format(cfg, (uint32_t)harness_format));
    datasync_resolver_vtable rv = {st, by_priority, resolver_destroy};
    CHECK_OK(datasync_config_set_resolver(cfg, &rv));
    CHECK_OK(datasync_config_set_memory(cfg, DATASYNC_TIER_LOCAL, NULL));
    datasync_persistence_vtable pv = hstore_vtable(cloud);
    CHECK_OK(datasync_config_set_persistence(cfg, DATASYNC_TIER_CLOUD, &pv));
    CHECK_OK(datasync_config_set_cloud_sync_interval(cfg, 3600 * 1000));
    CHECK_OK(datasync_config_set_sync_on_open(cfg, false));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    return ds;
}

static void test_host_resolver(void) {
    hstore cloud;
    hstore_init(&cloud);
    resolver_state st;
    memset(&st, 0, sizeof st);
    pthread_mutex_init(&st.lock, NULL);
    datasync_instance *a = open_resolving(&cloud, &st);
    datasync_instance *b = open_resolving(&cloud, &st);

    char *id = NULL;
    CHECK_OK(datasync_entity_save(a, "Job", "{\"priority\":5,\"by\":\"nobody\"}", &id));
    datasync_string_free(sync_stats(a));
    datasync_string_free(sync_stats(b));
    char edit[200];
    snprintf(edit, sizeof edit, "{\"id\":\"%s\",\"priority\":9,\"by\":\"A\"}", id);
    CHECK_OK(datasync_entity_save(a, "Job", edit, NULL));
    snprintf(edit, sizeof edit, "{\"id\":\"%s\",\"priority\":1,\"by\":\"B\"}", id);
    CHECK_OK(datasync_entity_save(b, "Job", edit, NULL)); /* later, but lower priority */
    datasync_string_free(sync_stats(a));
    datasync_string_free(sync_stats(b));
    datasync_string_free(sync_stats(a));
    char *ja = get(a, "Job", id);
    char *jb = get(b, "Job", id);
    CHECK(contains(ja, "\"by\":\"A\"") && contains(jb, "\"by\":\"A\""));
    datasync_string_free(ja);
    datasync_string_free(jb);
    pthread_mutex_lock(&st.lock);
    CHECK(st.calls >= 1 && st.destroyed == 0);
    pthread_mutex_unlock(&st.lock);
    datasync_instance_free(a);
    datasync_instance_free(b);
    CHECK(st.destroyed == 2);
    datasync_string_free(id);
    pthread_mutex_destroy(&st.lock);
    hstore_free(&cloud);
}

/* Two instances sharing a built-in memory cloud. */
static void test_shared_memory_cloud(void) {
    datasync_memory *mem = NULL;
    CHECK_OK(datasync_memory_new(&mem));
    datasync_instance *ds[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        datasync_config *cfg = NULL;
        CHECK_OK(datasync_config_new("mem", &cfg));
        CHECK_OK(datasync_config_set_format(cfg, (uint32_t)harness_format));
        CHECK_OK(datasync_config_set_memory(cfg, DATASYNC_TIER_CLOUD, mem));
        CHECK_OK(datasync_config_set_sync_on_open(cfg, false));
        CHECK_OK(datasync_instance_open(cfg, &ds[i]));
    }
    datasync_memory_free(mem); /* the tiers keep the map alive */
    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds[0], "Msg", "{\"text\":\"hi\"}", &id));
    datasync_string_free(sync_stats(ds[0]));
    char *json = get(ds[1], "Msg", id); /* hydrated from the cloud */
    CHECK(contains(json, "\"text\":\"hi\""));
    datasync_string_free(json);
    /* Tier keys: several partitions, sorted; an instance without a local tier. */
    CHECK_OK(datasync_entity_save(ds[0], "Alpha", "{}", NULL));
    datasync_string_free(sync_stats(ds[0]));
    char *keys = NULL;
    CHECK_OK(datasync_instance_tier_keys(ds[1], DATASYNC_TIER_CLOUD, &keys));
    CHECK(keys != NULL && strcmp(keys, "[\"mem.Alpha\",\"mem.Msg\"]") == 0);
    datasync_string_free(keys);
    keys = NULL;
    CHECK_STATUS(datasync_instance_tier_keys(ds[1], DATASYNC_TIER_LOCAL, &keys), DATASYNC_INVALID_CONFIG);
    CHECK(keys == NULL && contains(datasync_error_message(), "Local"));
    datasync_string_free(id);
    datasync_instance_free(ds[0]);
    datasync_instance_free(ds[1]);
}

/* A host cloud that offers the conditional write: the library writes the shared
 * tier only through it, and a refused write (another writer came first) is read
 * again, merged and written, so both devices still end with both writes. */
static void test_conditional_cloud(void) {
    hstore cloud;
    hstore_init(&cloud);
    cloud.conditional = 1;
    datasync_instance *a = open_with("app", NULL, &cloud);
    datasync_instance *b = open_with("app", NULL, &cloud);
    CHECK(a != NULL && b != NULL);
    char *ida = NULL, *idb = NULL;
    CHECK_OK(datasync_entity_save(a, "User", "{\"name\":\"from a\"}", &ida));
    datasync_string_free(sync_stats(a));
    CHECK_OK(datasync_entity_save(b, "User", "{\"name\":\"from b\"}", &idb));
    pthread_mutex_lock(&cloud.lock);
    cloud.refuse_next = 2;
    pthread_mutex_unlock(&cloud.lock);
    char *stats = sync_stats(b);
    CHECK(contains(stats, "\"write_races\":"));
    CHECK(!contains(stats, "\"write_races\":0"));
    datasync_string_free(stats);
    datasync_string_free(sync_stats(a));
    char *ja = get(a, "User", idb);
    char *jb = get(b, "User", ida);
    CHECK(ja != NULL && contains(ja, "from b"));
    CHECK(jb != NULL && contains(jb, "from a"));
    datasync_string_free(ja);
    datasync_string_free(jb);
    pthread_mutex_lock(&cloud.lock);
    CHECK(cloud.store_ifs > 0 && cloud.store_if_refused == 2);
    /* Never an unconditional write of a mutable document into the shared tier
     * (format 2's pieces are write-once, named by their hash). */
    CHECK(cloud.mutable_stores == 0);
    if (harness_format == 1) CHECK(cloud.stores == 0);
    pthread_mutex_unlock(&cloud.lock);
    datasync_instance_free(a);
    datasync_instance_free(b);
    datasync_string_free(ida);
    datasync_string_free(idb);
    hstore_free(&cloud);
}

int main(void) {
    /* Each test on format 2 (the default), then on format 1. */
    for (harness_format = 2; harness_format >= 1; harness_format--) {
        test_conditional_cloud();
        test_two_devices();
        test_tie_rules();
        test_last_writer_wins();
        test_host_resolver();
        test_shared_memory_cloud();
    }
    return finish("test_sync");
}
