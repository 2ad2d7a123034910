/* Every error path and its status; out-handles untouched on failure; destroy runs
 * exactly once when a vtable's call fails; the per-thread last-error message. */
#include "harness.h"

static int destroyed_plain = 0;
static void count_destroy(void *userdata) {
    (void)userdata;
    destroyed_plain++;
}

static datasync_instance *open_memory(const char *prefix) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    if (datasync_config_new(prefix, &cfg) != DATASYNC_OK) return NULL;
    if (datasync_instance_open(cfg, &ds) != DATASYNC_OK) return NULL;
    return ds;
}

static void *last_error_thread(void *arg) {
    (void)arg;
    /* A fresh thread has no error of its own. */
    return (void *)(strcmp(datasync_error_message(), "") == 0 ? (void *)1 : NULL);
}

static void test_arguments(void) {
    datasync_instance *ds = open_memory("err");
    char *out = NULL;

    /* NULL pointers. */
    datasync_config *cfg = (datasync_config *)&out;
    CHECK_STATUS(datasync_config_new(NULL, &cfg), DATASYNC_NULL_ARGUMENT);
    CHECK(cfg == (datasync_config *)&out); /* untouched */
    CHECK(contains(datasync_error_message(), "prefix"));
    CHECK_STATUS(datasync_config_new("x", NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_instance_open(NULL, NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_entity_save(NULL, "User", "{}", &out), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_entity_save(ds, NULL, "{}", &out), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_entity_save(ds, "User", NULL, &out), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_entity_get(ds, "User", "User.x", NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_entity_get(ds, "User", NULL, &out), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_entity_query(ds, "User", NULL, &out), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_entity_query(ds, "User", "{}", NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_entity_delete(ds, "User", NULL, NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_instance_flush(NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_instance_close(NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_instance_sync_now(NULL, NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_instance_status(ds, NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_subscription_cancel(NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_bytes_sink_write(NULL, (const uint8_t *)"x", 1), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_bytes_sink_write_str(NULL, "x"), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_memory_new(NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_logger_add(NULL, DATASYNC_LOG_INFO, NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_config_set_persistence(NULL, DATASYNC_TIER_LOCAL, NULL), DATASYNC_NULL_ARGUMENT);
    datasync_instance_free(NULL);
    datasync_config_free(NULL);
    datasync_string_free(NULL);
    datasync_memory_free(NULL);
    CHECK(out == NULL);

    /* Invalid UTF-8. */
    CHECK_STATUS(datasync_entity_save(ds, "Us\xff" "er", "{}", &out), DATASYNC_INVALID_UTF8);
    CHECK(contains(datasync_error_message(), "entity_name"));
    CHECK_STATUS(datasync_entity_save(ds, "User", "{\"name\":\"\xc3\x28\"}", &out), DATASYNC_INVALID_UTF8);
    CHECK_STATUS(datasync_entity_get(ds, "User", "User.\xfe", &out), DATASYNC_INVALID_UTF8);
    CHECK_STATUS(datasync_config_new("\xff", &cfg), DATASYNC_INVALID_UTF8);

    /* JSON, entities, names, ids, keys, queries. */
    CHECK_STATUS(datasync_entity_save(ds, "User", "{not json", &out), DATASYNC_INVALID_JSON);
    CHECK_STATUS(datasync_entity_save_many(ds, "User", "{\"a\":1}", &out), DATASYNC_INVALID_JSON);
    CHECK_STATUS(datasync_entity_delete_many(ds, "User", "[1,2]", NULL), DATASYNC_INVALID_JSON);
    CHECK_STATUS(datasync_entity_save(ds, "User", "[1,2]", &out), DATASYNC_INVALID_ENTITY);
    CHECK_STATUS(datasync_entity_save(ds, "User", "{\"createdAt\":5}", &out), DATASYNC_INVALID_ENTITY);
    CHECK_STATUS(datasync_entity_save_many(ds, "User", "[{\"ok\":1}, 7]", &out), DATASYNC_INVALID_ENTITY);
    CHECK_STATUS(datasync_entity_save(ds, "deleted", "{}", &out), DATASYNC_INVALID_NAME);
    CHECK_STATUS(datasync_entity_save(ds, "", "{}", &out), DATASYNC_INVALID_NAME);
    CHECK_STATUS(datasync_entity_get(ds, "Us.er", "User.x", &out), DATASYNC_INVALID_NAME);
    CHECK_STATUS(datasync_entity_get(ds, "User", "noseparator", &out), DATASYNC_INVALID_ID);
    CHECK_STATUS(datasync_entity_save(ds, "User", "{\"id\":\"bad\"}", &out), DATASYNC_INVALID_ID);
    CHECK_STATUS(datasync_entity_save(ds, "User", "{\"id\":42}", &out), DATASYNC_INVALID_ID);
    CHECK_STATUS(datasync_entity_query(ds, "User", "{\"wher\":{}}", &out), DATASYNC_INVALID_QUERY);
    CHECK_STATUS(datasync_entity_query(ds, "User", "{\"sort\":[{\"field\":\"a\",\"order\":\"up\"}]}", &out), DATASYNC_INVALID_QUERY);
    CHECK(out == NULL);
    /* Nothing was written by any of the failures. */
    CHECK_OK(datasync_entity_query(ds, "User", "{}", &out));
    CHECK(out != NULL && strcmp(out, "[]") == 0);
    datasync_string_free(out);
    out = NULL;
    datasync_instance_free(ds);

    CHECK_OK(datasync_config_new("field", &cfg));
    CHECK_OK(datasync_config_set_strategy_field(cfg, "region"));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    CHECK_STATUS(datasync_entity_save(ds, "Shop", "{\"region\":\"e\\nu\"}", &out), DATASYNC_INVALID_KEY);
    CHECK_STATUS(datasync_entity_save(ds, "Shop", "{\"region\":null}", &out), DATASYNC_INVALID_ENTITY);
    CHECK_STATUS(datasync_entity_query(ds, "Shop", "{\"filter\":{\"other\":1}}", &out), DATASYNC_INVALID_QUERY);
    datasync_instance_free(ds);

    /* The message: set by a failure, cleared by the next success, per thread. */
    CHECK_STATUS(datasync_config_new(NULL, &cfg), DATASYNC_NULL_ARGUMENT);
    CHECK(strlen(datasync_error_message()) > 0);
    pthread_t t;
    void *fresh = NULL;
    pthread_create(&t, NULL, last_error_thread, NULL);
    pthread_join(t, &fresh);
    CHECK(fresh != NULL);
    CHECK(strlen(datasync_error_message()) > 0);
    CHECK_OK(datasync_config_new("ok", &cfg));
    CHECK(strcmp(datasync_error_message(), "") == 0);
    datasync_config_free(cfg);

    CHECK(strcmp(datasync_code_name(DATASYNC_INVALID_UTF8), "DATASYNC_INVALID_UTF8") == 0);
    CHECK(strcmp(datasync_code_name(0), "DATASYNC_OK") == 0);
    CHECK(strcmp(datasync_code_name(7), "DATASYNC_UNKNOWN") == 0);
}

static void test_config_errors(void) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = (datasync_instance *)&cfg;
    hstore local;
    hstore_init(&local);

    /* Bad prefix: open fails, the config is consumed and its vtables destroyed once. */
    CHECK_OK(datasync_config_new("", &cfg));
    datasync_persistence_vtable pv = hstore_vtable(&local);
    CHECK_OK(datasync_config_set_persistence(cfg, DATASYNC_TIER_LOCAL, &pv));
    CHECK_STATUS(datasync_instance_open(cfg, &ds), DATASYNC_INVALID_CONFIG);
    CHECK(ds == (datasync_instance *)&cfg);
    CHECK(hstore_destroyed(&local) == 1);
    CHECK_OK(datasync_config_new("!reserved", &cfg));
    CHECK_STATUS(datasync_instance_open(cfg, &ds), DATASYNC_INVALID_CONFIG);
    CHECK_OK(datasync_config_new("app", &cfg));
    CHECK_OK(datasync_config_set_cloud_sync_interval(cfg, 0));
    CHECK_STATUS(datasync_instance_open(cfg, &ds), DATASYNC_INVALID_CONFIG);
    CHECK_OK(datasync_config_new("app", &cfg));
    CHECK_OK(datasync_config_set_retry(cfg, 10, 5));
    CHECK_STATUS(datasync_instance_open(cfg, &ds), DATASYNC_INVALID_CONFIG);
    CHECK(ds == (datasync_instance *)&cfg);

    /* Bad arguments to setters; a vtable handed over is destroyed even then. */
    CHECK_OK(datasync_config_new("app", &cfg));
    CHECK_STATUS(datasync_config_set_memory(cfg, 7, NULL), DATASYNC_INVALID_ARGUMENT);
    CHECK_STATUS(datasync_config_set_strategy_date(cfg, 9), DATASYNC_INVALID_ARGUMENT);
    CHECK_STATUS(datasync_config_set_persistence(cfg, 0, &pv), DATASYNC_INVALID_ARGUMENT);
    CHECK(hstore_destroyed(&local) == 2);
    datasync_persistence_vtable no_load = pv;
    no_load.load = NULL;
    CHECK_STATUS(datasync_config_set_persistence(cfg, DATASYNC_TIER_LOCAL, &no_load), DATASYNC_INVALID_ARGUMENT);
    CHECK(hstore_destroyed(&local) == 3);
    CHECK_STATUS(datasync_config_set_persistence(NULL, DATASYNC_TIER_LOCAL, &pv), DATASYNC_NULL_ARGUMENT);
    CHECK(hstore_destroyed(&local) == 4);
    datasync_strategy_vtable sv = {NULL, 0, 0, NULL, NULL, count_destroy};
    CHECK_STATUS(datasync_config_set_strategy(cfg, &sv), DATASYNC_INVALID_ARGUMENT);
    CHECK(destroyed_plain == 1);
    datasync_strategy_vtable bad_sep = {NULL, 0xD800, 0, NULL, NULL, count_destroy};
    CHECK_STATUS(datasync_config_set_strategy(cfg, &bad_sep), DATASYNC_INVALID_ARGUMENT);
    CHECK(destroyed_plain == 2);
    datasync_resolver_vtable rv = {NULL, NULL, count_destroy};
    CHECK_STATUS(datasync_config_set_resolver(cfg, &rv), DATASYNC_INVALID_ARGUMENT);
    CHECK(destroyed_plain == 3);
    datasync_logger_vtable lv = {NULL, NULL, count_destroy};
    CHECK_STATUS(datasync_logger_add(&lv, DATASYNC_LOG_INFO, NULL), DATASYNC_INVALID_ARGUMENT);
    CHECK(destroyed_plain == 4);
    /* Replacing a tier destroys the one it replaces; freeing the config the rest. */
    CHECK_OK(datasync_config_set_persistence(cfg, DATASYNC_TIER_LOCAL, &pv));
    CHECK_OK(datasync_config_set_memory(cfg, DATASYNC_TIER_LOCAL, NULL));
    CHECK(hstore_destroyed(&local) == 5);
    CHECK_OK(datasync_config_set_persistence(cfg, DATASYNC_TIER_CLOUD, &pv));
    datasync_config_free(cfg);
    CHECK(hstore_destroyed(&local) == 6);

    hstore_free(&local);
}

static int32_t refusing_key(void *userdata, const char *entity_name, const char *entity_json, size_t entity_len,
                            datasync_bytes_sink *out_key);
static int32_t garbage_candidates(void *userdata, const char *prefix, const char *entity_name, const char *filter_json,
                                  size_t filter_len, datasync_bytes_sink *out);

static void test_strategy_refused_at_open(void) {
    /* A separator that appears in generated ids cannot work: refused at open, and the
     * strategy is destroyed once. */
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    int before = destroyed_plain;
    CHECK_OK(datasync_config_new("app", &cfg));
    datasync_strategy_vtable letter_sep = {NULL, 'a', 0, refusing_key, garbage_candidates, count_destroy};
    CHECK_OK(datasync_config_set_strategy(cfg, &letter_sep));
    CHECK_STATUS(datasync_instance_open(cfg, &ds), DATASYNC_INVALID_CONFIG);
    CHECK(ds == NULL);
    CHECK(destroyed_plain == before + 1);
}

static int32_t refusing_key(void *userdata, const char *entity_name, const char *entity_json, size_t entity_len,
                            datasync_bytes_sink *out_key) {
    (void)userdata, (void)entity_name, (void)entity_json, (void)entity_len, (void)out_key;
    return 3;
}

static int32_t silent_key(void *userdata, const char *entity_name, const char *entity_json, size_t entity_len,
                          datasync_bytes_sink *out_key) {
    (void)userdata, (void)entity_name, (void)entity_json, (void)entity_len, (void)out_key;
    return 0; /* writes nothing */
}

static int32_t garbage_candidates(void *userdata, const char *prefix, const char *entity_name, const char *filter_json,
                                  size_t filter_len, datasync_bytes_sink *out) {
    (void)userdata, (void)prefix, (void)entity_name, (void)filter_json, (void)filter_len;
    datasync_bytes_sink_write_str(out, "{\"keys\":\"not a list\"}");
    return 0;
}

static void test_adapter_and_callback_errors(void) {
    hstore local;
    hstore_init(&local);
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;

    /* The local tier fails on open: ADAPTER, and its destroy runs once. */
    hstore_fail(&local, 4, 0);
    CHECK(open_with("app", &local, NULL) == NULL);
    CHECK(hstore_destroyed(&local) == 1);
    hstore_fail(&local, 0, 0);

    /* A corrupt partition in the local tier: CORRUPT for reads of it, the rest works. */
    hstore_put_text(&local, "app.Broken", "this is not a partition");
    ds = open_with("app", &local, NULL);
    CHECK(ds != NULL);
    char *out = NULL;
    CHECK_STATUS(datasync_entity_get(ds, "Broken", "Broken.abcdefgh12345678", &out), DATASYNC_CORRUPT);
    CHECK(contains(datasync_error_message(), "app.Broken"));
    CHECK_OK(datasync_entity_save(ds, "Fine", "{\"ok\":true}", NULL));

    /* A failing load of a partition not read yet: ADAPTER. */
    hstore_fail(&local, 6, 0);
    CHECK_STATUS(datasync_entity_get(ds, "Other", "Other.abcdefgh12345678", &out), DATASYNC_ADAPTER);
    CHECK(contains(datasync_error_message(), "host load callback returned 6"));
    hstore_fail(&local, 0, 0);
    CHECK(out == NULL);

    /* Closed. */
    CHECK_OK(datasync_instance_close(ds));
    CHECK_STATUS(datasync_entity_save(ds, "Fine", "{}", NULL), DATASYNC_CLOSED);
    CHECK_STATUS(datasync_entity_get(ds, "Fine", "Fine.abcdefgh12345678", &out), DATASYNC_CLOSED);
    CHECK_STATUS(datasync_entity_query(ds, "Fine", "{}", &out), DATASYNC_CLOSED);
    CHECK_STATUS(datasync_instance_flush(ds), DATASYNC_CLOSED);
    CHECK_STATUS(datasync_instance_sync_now(ds, NULL), DATASYNC_CLOSED);
    CHECK_STATUS(datasync_instance_audit(ds, &out), DATASYNC_CLOSED);
    CHECK_OK(datasync_instance_close(ds));
    datasync_instance_free(ds);
    CHECK(hstore_destroyed(&local) == 2);

    /* Host strategy callbacks that fail or write nonsense: CALLBACK. */
    datasync_strategy_vtable refusing = {NULL, 0, 0, refusing_key, garbage_candidates, count_destroy};
    int before = destroyed_plain;
    CHECK_OK(datasync_config_new("cb", &cfg));
    CHECK_OK(datasync_config_set_strategy(cfg, &refusing));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    CHECK_STATUS(datasync_entity_save(ds, "Thing", "{}", NULL), DATASYNC_CALLBACK);
    CHECK(contains(datasync_error_message(), "returned 3"));
    CHECK_STATUS(datasync_entity_query(ds, "Thing", "{}", &out), DATASYNC_CALLBACK);
    datasync_instance_free(ds);
    CHECK(destroyed_plain == before + 1);
    datasync_strategy_vtable silent = {NULL, 0, 0, silent_key, garbage_candidates, NULL};
    CHECK_OK(datasync_config_new("cb", &cfg));
    CHECK_OK(datasync_config_set_strategy(cfg, &silent));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    CHECK_STATUS(datasync_entity_save(ds, "Thing", "{}", NULL), DATASYNC_CALLBACK);
    CHECK(contains(datasync_error_message(), "wrote nothing"));
    datasync_instance_free(ds);

    /* Flushing to a local tier whose store fails: an error status, and the write stays
     * pending until the tier works again. */
    ds = open_with("app", &local, NULL);
    CHECK_OK(datasync_entity_save(ds, "Late", "{\"n\":1}", NULL));
    hstore_fail(&local, 0, 7);
    CHECK_STATUS(datasync_instance_flush(ds), DATASYNC_ADAPTER);
    CHECK(contains(datasync_error_message(), "host store callback returned 7"));
    char *status = NULL;
    CHECK_OK(datasync_instance_status(ds, &status));
    CHECK(contains(status, "\"pending_keys\":1"));
    datasync_string_free(status);
    hstore_fail(&local, 0, 0);
    CHECK_OK(datasync_instance_flush(ds));
    char *blob = hstore_partition_text(&local, "app.Late");
    CHECK(contains(blob, "\"n\":1"));
    free(blob);
    datasync_instance_free(ds);
    hstore_free(&local);
}

static void test_panic(void) {
    CHECK_STATUS(datasync_debug_panic("deliberate"), DATASYNC_PANIC);
    CHECK(contains(datasync_error_message(), "deliberate"));
    CHECK_STATUS(datasync_debug_panic(NULL), DATASYNC_PANIC);
    /* The library still works after a caught panic. */
    datasync_instance *ds = open_memory("after");
    CHECK(ds != NULL);
    CHECK_OK(datasync_entity_save(ds, "User", "{}", NULL));
    datasync_instance_free(ds);
}

/* Strategy settings that cannot work are refused by the setter, and the
 * configuration keeps the strategy it had: no silent '.' or empty field. */
static void test_strategy_settings_refused(void) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    CHECK_OK(datasync_config_new("geo", &cfg));
    CHECK_OK(datasync_config_set_strategy_field(cfg, "region"));
    CHECK_STATUS(datasync_config_set_strategy_field(cfg, ""), DATASYNC_INVALID_CONFIG);
    CHECK(contains(datasync_error_message(), "field"));
    int before = destroyed_plain;
    const uint32_t not_scalar[] = {0xD800, 0xDFFF, 0x110000, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof not_scalar / sizeof not_scalar[0]; i++) {
        datasync_strategy_vtable sv = {NULL, not_scalar[i], 0, refusing_key, garbage_candidates, count_destroy};
        CHECK_STATUS(datasync_config_set_strategy(cfg, &sv), DATASYNC_INVALID_ARGUMENT);
        CHECK(contains(datasync_error_message(), "not a Unicode scalar value"));
    }
    CHECK(destroyed_plain == before + 4);
    CHECK_OK(datasync_instance_open(cfg, &ds));
    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds, "Shop", "{\"region\":\"eu\"}", &id));
    CHECK(id != NULL && strncmp(id, "Shop.eu.", 8) == 0);
    datasync_string_free(id);
    datasync_instance_free(ds);
    CHECK(destroyed_plain == before + 4);
}

int main(void) {
    test_arguments();
    test_config_errors();
    test_strategy_refused_at_open();
    test_strategy_settings_refused();
    test_adapter_and_callback_errors();
    test_panic();
    return finish("test_errors");
}
