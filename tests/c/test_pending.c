/* "Is it synced?": pending writes as JSON, waiting for the cloud with a timeout,
 * pending_cloud in the status, and a wait refused inside an observer callback. */
#include "harness.h"

/* A local and a cloud tier in C; syncs (store and cloud) only when asked. */
static datasync_instance *open_manual(hstore *local, hstore *cloud) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    CHECK_OK(datasync_config_new("app", &cfg));
    datasync_persistence_vtable lv = hstore_vtable(local);
    CHECK_OK(datasync_config_set_persistence(cfg, DATASYNC_TIER_LOCAL, &lv));
    datasync_persistence_vtable cv = hstore_vtable(cloud);
    CHECK_OK(datasync_config_set_persistence(cfg, DATASYNC_TIER_CLOUD, &cv));
    CHECK_OK(datasync_config_set_store_sync_delay(cfg, 3600 * 1000));
    CHECK_OK(datasync_config_set_cloud_sync_interval(cfg, 3600 * 1000));
    CHECK_OK(datasync_config_set_sync_on_open(cfg, false));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    return ds;
}

static char *pending(datasync_instance *ds) {
    char *json = NULL;
    CHECK_OK(datasync_instance_pending_writes(ds, &json));
    return json;
}

/* The part of the pending JSON after "cloud": (the local list comes first). */
static const char *cloud_part(const char *json) {
    const char *at = json ? strstr(json, "\"cloud\":") : NULL;
    return at ? at : "";
}

static void test_pending_and_wait(void) {
    hstore local, cloud;
    hstore_init(&local);
    hstore_init(&cloud);
    datasync_instance *ds = open_manual(&local, &cloud);

    char *json = pending(ds);
    CHECK(json && strcmp(json, "{\"local\":[],\"cloud\":[]}") == 0);
    datasync_string_free(json);

    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds, "User", "{\"name\":\"Ada\"}", &id));
    json = pending(ds);
    CHECK(contains(json, id) && !contains(cloud_part(json), id));
    CHECK(contains(json, "\"name\":\"User\"") && contains(json, "\"key\":"));
    datasync_string_free(json);

    CHECK_OK(datasync_instance_flush(ds));
    json = pending(ds);
    CHECK(contains(cloud_part(json), id) && contains(json, "\"local\":[]"));
    datasync_string_free(json);
    char *status = NULL;
    CHECK_OK(datasync_instance_status(ds, &status));
    CHECK(contains(status, "\"pending_cloud\":1"));
    datasync_string_free(status);

    /* Nothing syncs with the cloud meanwhile: the wait runs out. */
    CHECK_STATUS(datasync_instance_wait_in_cloud(ds, "User", id, 30), DATASYNC_TIMEOUT);
    CHECK(contains(datasync_error_message(), "timed out"));
    CHECK_STATUS(datasync_instance_wait_all_in_cloud(ds, 0), DATASYNC_TIMEOUT);
    CHECK(strcmp(datasync_code_name(DATASYNC_TIMEOUT), "DATASYNC_TIMEOUT") == 0);

    char *stats = NULL;
    CHECK_OK(datasync_instance_sync_now(ds, &stats));
    datasync_string_free(stats);
    CHECK_OK(datasync_instance_wait_in_cloud(ds, "User", id, 0));
    CHECK_OK(datasync_instance_wait_all_in_cloud(ds, 1000));
    json = pending(ds);
    CHECK(json && strcmp(json, "{\"local\":[],\"cloud\":[]}") == 0);
    datasync_string_free(json);
    CHECK_OK(datasync_instance_status(ds, &status));
    CHECK(contains(status, "\"pending_cloud\":0"));
    datasync_string_free(status);

    /* A delete is a write too. */
    CHECK_OK(datasync_entity_delete(ds, "User", id, NULL));
    json = pending(ds);
    CHECK(contains(json, id));
    datasync_string_free(json);

    CHECK_STATUS(datasync_instance_pending_writes(ds, NULL), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_instance_wait_in_cloud(ds, NULL, id, 0), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_instance_wait_in_cloud(NULL, "User", id, 0), DATASYNC_NULL_ARGUMENT);

    datasync_string_free(id);
    datasync_instance_free(ds);
    hstore_free(&local);
    hstore_free(&cloud);
}

static void test_no_cloud(void) {
    hstore local;
    hstore_init(&local);
    datasync_instance *ds = open_with("app", &local, NULL);
    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds, "User", "{}", &id));
    CHECK_STATUS(datasync_instance_wait_in_cloud(ds, "User", id, 0), DATASYNC_INVALID_CONFIG);
    datasync_string_free(id);
    datasync_instance_free(ds);
    hstore_free(&local);
}

typedef struct waiter {
    pthread_mutex_t lock;
    datasync_instance *ds;
    int calls;
    int code; /* what a wait made inside the callback returned */
} waiter;

static void on_status(void *userdata, const char *json, size_t len) {
    (void)json;
    (void)len;
    waiter *w = userdata;
    int code = datasync_instance_wait_all_in_cloud(w->ds, 60 * 1000);
    pthread_mutex_lock(&w->lock);
    w->calls++;
    w->code = code;
    pthread_mutex_unlock(&w->lock);
}

static void test_wait_inside_a_callback(void) {
    hstore local, cloud;
    hstore_init(&local);
    hstore_init(&cloud);
    datasync_instance *ds = open_manual(&local, &cloud);
    CHECK_OK(datasync_entity_save(ds, "User", "{}", NULL));
    waiter w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.lock, NULL);
    w.ds = ds;
    w.code = -1;
    datasync_observer obs = {.userdata = &w, .on_change = on_status, .destroy = NULL};
    datasync_subscription *sub = NULL;
    CHECK_OK(datasync_instance_observe_status(ds, &obs, &sub));
    CHECK_OK(datasync_instance_drain_events(ds));
    pthread_mutex_lock(&w.lock);
    CHECK(w.calls >= 1);
    CHECK(w.code == DATASYNC_WOULD_DEADLOCK);
    pthread_mutex_unlock(&w.lock);
    datasync_subscription_free(sub);
    datasync_instance_free(ds);
    pthread_mutex_destroy(&w.lock);
    hstore_free(&local);
    hstore_free(&cloud);
}

int main(void) {
    test_pending_and_wait();
    test_no_cloud();
    test_wait_inside_a_callback();
    return finish("test_pending");
}
