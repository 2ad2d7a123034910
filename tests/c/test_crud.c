/* A host store in C; save, get, delete, query; built-in and host strategies; logger. */
#include "harness.h"

#include <ftw.h>
#include <stdatomic.h>
#include <unistd.h>

static void test_crud_on_host_store(void) {
    hstore local;
    hstore_init(&local);
    datasync_instance *ds = open_with("app", &local, NULL);
    CHECK(ds != NULL);

    char *alice = NULL;
    CHECK_OK(datasync_entity_save(ds, "User", "{\"name\":\"Alice\",\"age\":30,\"team\":\"core\"}", &alice));
    CHECK(alice != NULL && strncmp(alice, "User.", 5) == 0);

    char *json = NULL;
    CHECK_OK(datasync_entity_get(ds, "User", alice, &json));
    CHECK(contains(json, "\"name\":\"Alice\""));
    CHECK(contains(json, "\"version\":1"));
    CHECK(contains(json, "\"createdAt\":\"") && contains(json, "\"updatedAt\":\""));
    datasync_string_free(json);

    /* Saving with the id updates and bumps the version. */
    char update[256];
    snprintf(update, sizeof update, "{\"id\":\"%s\",\"name\":\"Alice\",\"age\":31,\"team\":\"core\"}", alice);
    char *same = NULL;
    CHECK_OK(datasync_entity_save(ds, "User", update, &same));
    CHECK(same != NULL && strcmp(same, alice) == 0);
    datasync_string_free(same);
    CHECK_OK(datasync_entity_get(ds, "User", alice, &json));
    CHECK(contains(json, "\"version\":2") && contains(json, "\"age\":31"));
    datasync_string_free(json);

    char *ids = NULL;
    CHECK_OK(datasync_entity_save_many(ds, "User",
                                "[{\"name\":\"Bob\",\"age\":25,\"team\":\"web\"},"
                                " {\"name\":\"Carol\",\"age\":40,\"team\":\"core\"},"
                                " {\"name\":\"Dan\",\"team\":\"core\"}]",
                                &ids));
    CHECK(ids != NULL && ids[0] == '[' && occurrences(ids, "\"User.") == 3);

    /* where + sort (descending, missing first in ascending) + limit. */
    CHECK_OK(datasync_entity_query(ds, "User", "{\"where\":{\"team\":\"core\"},\"sort\":[\"age:desc\"],\"limit\":2}", &json));
    CHECK(occurrences(json, "\"id\":") == 2);
    CHECK(contains(json, "Carol") && contains(json, "Alice") && !contains(json, "Dan"));
    CHECK(json != NULL && strstr(json, "Carol") < strstr(json, "Alice"));
    datasync_string_free(json);
    CHECK_OK(datasync_entity_query(ds, "User", "{\"sort\":[\"age\"]}", &json));
    CHECK(occurrences(json, "\"id\":") == 4);
    CHECK(json != NULL && strstr(json, "Dan") < strstr(json, "Bob"));
    datasync_string_free(json);
    CHECK_OK(datasync_entity_query(ds, "User", "", &json));
    CHECK(occurrences(json, "\"id\":") == 4);
    datasync_string_free(json);

    /* Delete: existed, then gone; deleting again reports it did not exist. */
    bool existed = false;
    CHECK_OK(datasync_entity_delete(ds, "User", alice, &existed));
    CHECK(existed);
    json = (char *)"sentinel";
    CHECK_OK(datasync_entity_get(ds, "User", alice, &json));
    CHECK(json == NULL);
    CHECK_OK(datasync_entity_delete(ds, "User", alice, &existed));
    CHECK(!existed);

    size_t count = 99;
    CHECK_OK(datasync_entity_delete_many(ds, "User", ids, &count));
    CHECK(count == 3);
    CHECK_OK(datasync_entity_query(ds, "User", "{}", &json));
    CHECK(json != NULL && strcmp(json, "[]") == 0);
    datasync_string_free(json);
    datasync_string_free(ids);

    /* A survivor for the reopen below. */
    char *erin = NULL;
    CHECK_OK(datasync_entity_save(ds, "User", "{\"name\":\"Erin\"}", &erin));

    /* Flush: the host store now holds the partition (with the tombstones) and metadata. */
    CHECK_OK(datasync_instance_flush(ds));
    char *blob = hstore_partition_text(&local, "app.User");
    CHECK(contains(blob, "Erin") && contains(blob, "\"deleted\":{\"User\":{"));
    CHECK(contains(blob, alice));
    free(blob);
    blob = hstore_get_text(&local, "!index:app.User"); /* format 2, the default */
    CHECK(contains(blob, "\"h\":"));
    free(blob);

    char *audit = NULL;
    CHECK_OK(datasync_instance_audit(ds, &audit));
    CHECK(audit != NULL && strcmp(audit, "[]") == 0);
    datasync_string_free(audit);

    char *status = NULL;
    CHECK_OK(datasync_instance_status(ds, &status));
    CHECK(contains(status, "\"closed\":false") && contains(status, "\"online\":true"));
    datasync_string_free(status);

    CHECK_OK(datasync_instance_close(ds));
    CHECK_OK(datasync_instance_close(ds)); /* idempotent */
    CHECK_OK(datasync_instance_status(ds, &status));
    CHECK(contains(status, "\"closed\":true"));
    datasync_string_free(status);
    datasync_instance_free(ds);
    CHECK(hstore_destroyed(&local) == 1);

    /* Reopen over the same host data: the entity is read back from the local tier. */
    ds = open_with("app", &local, NULL);
    CHECK(ds != NULL);
    CHECK_OK(datasync_entity_get(ds, "User", erin, &json));
    CHECK(contains(json, "Erin"));
    datasync_string_free(json);
    CHECK_OK(datasync_entity_get(ds, "User", alice, &json));
    CHECK(json == NULL);
    datasync_instance_free(ds);
    CHECK(hstore_destroyed(&local) == 2);

    datasync_string_free(alice);
    datasync_string_free(erin);
    hstore_free(&local);
}

static void test_builtin_strategies(void) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    CHECK_OK(datasync_config_new("geo", &cfg));
    CHECK_OK(datasync_config_set_strategy_field(cfg, "region"));
    CHECK_OK(datasync_config_set_memory(cfg, DATASYNC_TIER_LOCAL, NULL));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds, "Shop", "{\"region\":\"eu\",\"name\":\"Berlin\"}", &id));
    CHECK(id != NULL && strncmp(id, "Shop.eu.", 8) == 0);
    datasync_string_free(id);
    CHECK_OK(datasync_entity_save(ds, "Shop", "{\"region\":\"us\",\"name\":\"Austin\"}", NULL));
    char *json = NULL;
    CHECK_OK(datasync_entity_query(ds, "Shop", "{\"filter\":{\"value\":\"eu\"}}", &json));
    CHECK(contains(json, "Berlin") && !contains(json, "Austin"));
    datasync_string_free(json);
    CHECK_OK(datasync_entity_query(ds, "Shop", "{\"filter\":{\"values\":[\"eu\",\"us\"]}}", &json));
    CHECK(contains(json, "Berlin") && contains(json, "Austin"));
    datasync_string_free(json);
    datasync_instance_free(ds);

    CHECK_OK(datasync_config_new("log", &cfg));
    CHECK_OK(datasync_config_set_strategy_date(cfg, DATASYNC_DATE_MONTH));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    CHECK_OK(datasync_entity_save(ds, "Entry", "{\"createdAt\":\"2026-03-15T10:00:00Z\",\"text\":\"march\"}", &id));
    CHECK(contains(id, "2026-03"));
    datasync_string_free(id);
    CHECK_OK(datasync_entity_save(ds, "Entry", "{\"createdAt\":\"2026-05-01T10:00:00Z\",\"text\":\"may\"}", NULL));
    CHECK_OK(datasync_entity_query(ds, "Entry",
                            "{\"filter\":{\"from\":\"2026-03-01T00:00:00Z\",\"to\":\"2026-04-30T00:00:00Z\"}}", &json));
    CHECK(contains(json, "march") && !contains(json, "may"));
    datasync_string_free(json);
    datasync_instance_free(ds);
}

/* Bounded partitions: with a bound of 10, 100 new users spread over sub-partitions
 * ("User.~..." ids) that a query reads as one; with 0, one partition. */
static void test_partition_bound(void) {
    char batch[4096];
    size_t at = 0;
    at += (size_t)snprintf(batch + at, sizeof batch - at, "[");
    for (int i = 0; i < 100; i++) {
        at += (size_t)snprintf(batch + at, sizeof batch - at, "%s{\"n\":%d}", i ? "," : "", i);
    }
    snprintf(batch + at, sizeof batch - at, "]");
    for (int bound = 0; bound <= 10; bound += 10) {
        datasync_config *cfg = NULL;
        datasync_instance *ds = NULL;
        CHECK_OK(datasync_config_new("app", &cfg));
        CHECK_OK(datasync_config_set_partition_bound(cfg, (uint64_t)bound));
        CHECK_OK(datasync_config_set_memory(cfg, DATASYNC_TIER_LOCAL, NULL));
        CHECK_OK(datasync_instance_open(cfg, &ds));
        char *ids = NULL;
        CHECK_OK(datasync_entity_save_many(ds, "User", batch, &ids));
        CHECK(bound == 0 ? !contains(ids, "User.~") : contains(ids, "User.~"));
        datasync_string_free(ids);
        CHECK_OK(datasync_instance_flush(ds));
        char *keys = NULL;
        CHECK_OK(datasync_instance_tier_keys(ds, DATASYNC_TIER_LOCAL, &keys));
        CHECK(bound == 0 ? strcmp(keys, "[\"app.User\"]") == 0 : contains(keys, "app.User.~"));
        datasync_string_free(keys);
        char *json = NULL;
        CHECK_OK(datasync_entity_query(ds, "User", "{\"sort\":[{\"field\":\"n\",\"order\":\"desc\"}],\"limit\":2}", &json));
        CHECK(json != NULL && strstr(json, "\"n\":99") != NULL && strstr(json, "\"n\":98") != NULL);
        CHECK(strstr(json, "\"n\":99") < strstr(json, "\"n\":98"));
        datasync_string_free(json);
        datasync_instance_free(ds);
    }
}

/* A host strategy: partition `<Name>/<first letter of "title">`, separator '/'. */
typedef struct {
    atomic_int logical_calls;
    atomic_int candidate_calls;
    atomic_int destroyed;
} strategy_state;

static int32_t first_letter_key(void *userdata, const char *entity_name, const char *entity_json, size_t entity_len,
                                datasync_bytes_sink *out_key) {
    strategy_state *st = userdata;
    atomic_fetch_add(&st->logical_calls, 1);
    if (strlen(entity_json) != entity_len) return 1;
    const char *title = strstr(entity_json, "\"title\":\"");
    if (title == NULL) return 2; /* no title: refuse */
    char key[300];
    snprintf(key, sizeof key, "%s/%c", entity_name, title[9]);
    return datasync_bytes_sink_write_str(out_key, key) == DATASYNC_OK ? 0 : 3;
}

static int32_t first_letter_candidates(void *userdata, const char *prefix, const char *entity_name,
                                       const char *filter_json, size_t filter_len, datasync_bytes_sink *out) {
    strategy_state *st = userdata;
    atomic_fetch_add(&st->candidate_calls, 1);
    char json[400];
    (void)filter_len;
    const char *letter = strstr(filter_json, "\"letter\":\"");
    if (letter != NULL) {
        snprintf(json, sizeof json, "{\"keys\":[\"%s/%s/%c\"]}", prefix, entity_name, letter[10]);
    } else {
        snprintf(json, sizeof json, "{\"prefix\":\"%s/%s/\"}", prefix, entity_name);
    }
    return datasync_bytes_sink_write(out, (const uint8_t *)json, strlen(json)) == DATASYNC_OK ? 0 : 3;
}

static void strategy_destroy(void *userdata) {
    strategy_state *st = userdata;
    atomic_fetch_add(&st->destroyed, 1);
}

static void test_host_strategy(void) {
    strategy_state st;
    atomic_init(&st.logical_calls, 0);
    atomic_init(&st.candidate_calls, 0);
    atomic_init(&st.destroyed, 0);
    datasync_strategy_vtable vt = {&st, '/', 12, first_letter_key, first_letter_candidates, strategy_destroy};
    hstore local;
    hstore_init(&local);
    datasync_persistence_vtable pv = hstore_vtable(&local);

    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    CHECK_OK(datasync_config_new("lib", &cfg));
    CHECK_OK(datasync_config_set_strategy(cfg, &vt));
    CHECK_OK(datasync_config_set_persistence(cfg, DATASYNC_TIER_LOCAL, &pv));
    CHECK_OK(datasync_instance_open(cfg, &ds));

    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds, "Book", "{\"title\":\"Dune\"}", &id));
    CHECK(id != NULL && strncmp(id, "Book/D/", 7) == 0 && strlen(id) == 7 + 12);
    datasync_string_free(id);
    CHECK_OK(datasync_entity_save(ds, "Book", "{\"title\":\"Emma\"}", NULL));
    CHECK_OK(datasync_entity_save(ds, "Book", "{\"title\":\"Dracula\"}", NULL));
    CHECK_STATUS(datasync_entity_save(ds, "Book", "{\"author\":\"nobody\"}", NULL), DATASYNC_CALLBACK);
    CHECK(contains(datasync_error_message(), "logical_key"));

    char *json = NULL;
    CHECK_OK(datasync_entity_query(ds, "Book", "{\"filter\":{\"letter\":\"D\"},\"sort\":[\"title\"]}", &json));
    CHECK(occurrences(json, "\"id\":") == 2 && strstr(json, "Dracula") < strstr(json, "Dune"));
    datasync_string_free(json);
    CHECK_OK(datasync_entity_query(ds, "Book", "null", &json));
    CHECK(occurrences(json, "\"id\":") == 3);
    datasync_string_free(json);

    CHECK_OK(datasync_instance_flush(ds));
    char *blob = hstore_partition_text(&local, "lib/Book/D");
    CHECK(contains(blob, "Dune") && contains(blob, "Dracula") && !contains(blob, "Emma"));
    free(blob);
    CHECK(atomic_load(&st.logical_calls) == 4);
    CHECK(atomic_load(&st.candidate_calls) >= 2);
    CHECK(atomic_load(&st.destroyed) == 0);
    datasync_instance_free(ds);
    CHECK(atomic_load(&st.destroyed) == 1);
    CHECK(hstore_destroyed(&local) == 1);
    hstore_free(&local);
}

typedef struct {
    atomic_int records;
    atomic_int info_open;
    atomic_int destroyed;
} log_state;

static void on_log(void *userdata, uint32_t level, const char *target, const char *message) {
    log_state *ls = userdata;
    atomic_fetch_add(&ls->records, 1);
    if (level == DATASYNC_LOG_INFO && strncmp(target, "datasync", 8) == 0 && contains(message, "opened instance")) {
        atomic_fetch_add(&ls->info_open, 1);
    }
}

static void log_destroy(void *userdata) {
    log_state *ls = userdata;
    atomic_fetch_add(&ls->destroyed, 1);
}

static void test_logger(void) {
    log_state ls;
    atomic_init(&ls.records, 0);
    atomic_init(&ls.info_open, 0);
    atomic_init(&ls.destroyed, 0);
    datasync_logger_vtable vt = {&ls, on_log, log_destroy};
    uint64_t handle = 0;
    CHECK_OK(datasync_logger_add(&vt, DATASYNC_LOG_INFO, &handle));
    CHECK(handle != 0);
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    CHECK_OK(datasync_config_new("logged", &cfg));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    CHECK(atomic_load(&ls.info_open) == 1);
    datasync_instance_free(ds);
    CHECK_OK(datasync_logger_remove(handle));
    CHECK(atomic_load(&ls.destroyed) == 1);
    int seen = atomic_load(&ls.records);
    CHECK_OK(datasync_config_new("quiet", &cfg));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    datasync_instance_free(ds);
    CHECK(atomic_load(&ls.records) == seen);
    CHECK_OK(datasync_logger_remove(handle)); /* unknown now: ignored */
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* The built-in directory tier: data survives closing and reopening. */
static void test_directory_tier(void) {
    char dir[] = "/tmp/datasync-c-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/local", dir);

    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    CHECK_OK(datasync_config_new("disk", &cfg));
    CHECK_OK(datasync_config_set_directory(cfg, DATASYNC_TIER_LOCAL, path, false));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds, "Doc", "{\"body\":\"kept on disk\"}", &id));
    CHECK_OK(datasync_instance_close(ds));
    datasync_instance_free(ds);

    CHECK_OK(datasync_config_new("disk", &cfg));
    CHECK_OK(datasync_config_set_directory(cfg, DATASYNC_TIER_LOCAL, path, true));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    char *json = NULL;
    CHECK_OK(datasync_entity_get(ds, "Doc", id, &json));
    CHECK(contains(json, "kept on disk"));
    datasync_string_free(json);
    datasync_instance_free(ds);
    datasync_string_free(id);

    /* A path that cannot be a directory: refused, the config is untouched. */
    char file[sizeof dir + 16];
    snprintf(file, sizeof file, "%s/file", dir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    CHECK_OK(datasync_config_new("disk", &cfg));
    CHECK_STATUS(datasync_config_set_directory(cfg, DATASYNC_TIER_LOCAL, file, true), DATASYNC_INVALID_CONFIG);
    CHECK(strlen(datasync_error_message()) > 0);
    datasync_config_free(cfg);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    CHECK(datasync_version() != NULL && strlen(datasync_version()) > 0);
    test_crud_on_host_store();
    test_builtin_strategies();
    test_partition_bound();
    test_host_strategy();
    test_logger();
    test_directory_tier();
    return finish("test_crud");
}
