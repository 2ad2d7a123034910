/* Observers: values and lists, calls back into the library, a subscription freed
 * from its own callback, cancel semantics, destroy, close with calls pending. */
#include "harness.h"

typedef struct watcher {
    pthread_mutex_t lock;
    int calls;
    int destroyed;
    char *last;              /* copy of the last JSON received */
    datasync_instance *ds;            /* for callbacks that call back into the library */
    datasync_subscription *self_sub; /* freed from inside the callback when set */
    int reentrant_get;       /* status of a datasync_entity_get made inside the callback */
    int reentrant_save;      /* status of a datasync_entity_save made inside the callback */
    int reentrant_flush;     /* status of a datasync_instance_flush made inside the callback */
    int reentrant_drain;     /* status of a datasync_instance_drain_events made inside the callback */
    int reentrant_close;     /* status of a datasync_instance_close made inside the callback */
    int calls_after_free;    /* calls seen after freeing its own subscription */
    int freed;
} watcher;

static void watcher_init(watcher *w, datasync_instance *ds) {
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    w->ds = ds;
    w->reentrant_get = w->reentrant_save = w->reentrant_flush = -1;
    w->reentrant_drain = w->reentrant_close = -1;
}

static void watcher_free(watcher *w) {
    free(w->last);
    pthread_mutex_destroy(&w->lock);
}

static int watcher_calls(watcher *w) {
    pthread_mutex_lock(&w->lock);
    int n = w->calls;
    pthread_mutex_unlock(&w->lock);
    return n;
}

/* A copy of the last JSON (caller frees). */
static char *watcher_last(watcher *w) {
    pthread_mutex_lock(&w->lock);
    char *out = w->last ? text_copy(w->last) : NULL;
    pthread_mutex_unlock(&w->lock);
    return out;
}

static void record(watcher *w, const char *json, size_t len) {
    pthread_mutex_lock(&w->lock);
    w->calls++;
    free(w->last);
    w->last = malloc(len + 1);
    memcpy(w->last, json, len);
    w->last[len] = '\0';
    pthread_mutex_unlock(&w->lock);
}

static void on_change(void *userdata, const char *json, size_t len) {
    record(userdata, json, len);
}

static void on_destroy(void *userdata) {
    watcher *w = userdata;
    pthread_mutex_lock(&w->lock);
    w->destroyed++;
    pthread_mutex_unlock(&w->lock);
}

static int watcher_destroyed(watcher *w) {
    pthread_mutex_lock(&w->lock);
    int n = w->destroyed;
    pthread_mutex_unlock(&w->lock);
    return n;
}

static datasync_instance *open_memory(const char *prefix) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    if (datasync_config_new(prefix, &cfg) != DATASYNC_OK) return NULL;
    datasync_config_set_memory(cfg, DATASYNC_TIER_LOCAL, NULL);
    if (datasync_instance_open(cfg, &ds) != DATASYNC_OK) return NULL;
    return ds;
}

static void test_observe_one(void) {
    datasync_instance *ds = open_memory("obs");
    watcher w;
    watcher_init(&w, ds);
    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds, "Task", "{\"title\":\"write tests\"}", &id));
    datasync_observer ob = {&w, on_change, on_destroy};
    datasync_subscription *sub = NULL;
    CHECK_OK(datasync_entity_observe(ds, "Task", id, &ob, &sub));
    CHECK_OK(datasync_instance_drain_events(ds));
    char *last = watcher_last(&w);
    CHECK(watcher_calls(&w) == 1 && contains(last, "write tests"));
    free(last);

    char update[200];
    snprintf(update, sizeof update, "{\"id\":\"%s\",\"title\":\"tests written\"}", id);
    CHECK_OK(datasync_entity_save(ds, "Task", update, NULL));
    CHECK_OK(datasync_instance_drain_events(ds));
    last = watcher_last(&w);
    CHECK(contains(last, "tests written") && contains(last, "\"version\":2"));
    free(last);

    CHECK_OK(datasync_entity_delete(ds, "Task", id, NULL));
    CHECK_OK(datasync_instance_drain_events(ds));
    last = watcher_last(&w);
    CHECK(last != NULL && strcmp(last, "null") == 0);
    free(last);

    /* An entity that does not exist yet: null first, then its value. */
    watcher w2;
    watcher_init(&w2, ds);
    datasync_observer ob2 = {&w2, on_change, on_destroy};
    datasync_subscription *sub2 = NULL;
    CHECK_OK(datasync_entity_observe(ds, "Task", "Task.notyetthere0001", &ob2, &sub2));
    CHECK_OK(datasync_entity_save(ds, "Task", "{\"id\":\"Task.notyetthere0001\",\"title\":\"late\"}", NULL));
    CHECK_OK(datasync_instance_drain_events(ds));
    last = watcher_last(&w2);
    CHECK(contains(last, "late"));
    free(last);

    /* Cancel: idempotent; no call after it returns; destroy ran exactly once. */
    CHECK_OK(datasync_subscription_cancel(sub));
    CHECK(watcher_destroyed(&w) == 1);
    CHECK_OK(datasync_subscription_cancel(sub));
    int before = watcher_calls(&w);
    CHECK_OK(datasync_entity_save(ds, "Task", update, NULL));
    CHECK_OK(datasync_instance_drain_events(ds));
    CHECK(watcher_calls(&w) == before);
    datasync_subscription_free(sub);
    datasync_subscription_free(NULL);
    CHECK(watcher_destroyed(&w) == 1);

    /* Freeing the instance ends the other subscription's observer; its handle stays
     * valid until freed. */
    datasync_instance_free(ds);
    CHECK(watcher_destroyed(&w2) == 1);
    datasync_subscription_free(sub2);
    CHECK(watcher_destroyed(&w2) == 1);
    datasync_string_free(id);
    watcher_free(&w);
    watcher_free(&w2);
}

static void test_observe_all_coalesces_to_the_final_state(void) {
    datasync_instance *ds = open_memory("list");
    watcher w;
    watcher_init(&w, ds);
    datasync_observer ob = {&w, on_change, on_destroy};
    datasync_subscription *sub = NULL;
    CHECK_OK(datasync_entity_observe_all(ds, "Item", "{\"where\":{\"kind\":\"a\"},\"sort\":[\"n\"]}", &ob, &sub));
    CHECK_OK(datasync_instance_drain_events(ds));
    char *last = watcher_last(&w);
    CHECK(last != NULL && strcmp(last, "[]") == 0);
    free(last);
    for (int i = 0; i < 50; i++) {
        char json[100];
        snprintf(json, sizeof json, "{\"n\":%d,\"kind\":\"%s\"}", i, i % 2 ? "b" : "a");
        CHECK_OK(datasync_entity_save(ds, "Item", json, NULL));
    }
    CHECK_OK(datasync_instance_drain_events(ds));
    last = watcher_last(&w);
    CHECK(occurrences(last, "\"kind\":\"a\"") == 25 && occurrences(last, "\"kind\":\"b\"") == 0);
    CHECK(last != NULL && strstr(last, "\"n\":0,") < strstr(last, "\"n\":48,"));
    free(last);
    CHECK(watcher_calls(&w) >= 2 && watcher_calls(&w) <= 51);
    datasync_subscription_free(sub);
    CHECK(watcher_destroyed(&w) == 1);
    datasync_instance_free(ds);
    watcher_free(&w);
}

/* Calls back into the library from the dispatcher thread. */
static void on_change_reentrant(void *userdata, const char *json, size_t len) {
    watcher *w = userdata;
    record(w, json, len);
    char *out = NULL;
    int get = datasync_entity_get(w->ds, "Note", "Note.doesnotexist01", &out);
    datasync_string_free(out);
    int save = datasync_entity_save(w->ds, "Audit", "{\"what\":\"seen a note\"}", NULL);
    int flush = datasync_instance_flush(w->ds);
    int drain = datasync_instance_drain_events(w->ds);
    int close = datasync_instance_close(w->ds);
    pthread_mutex_lock(&w->lock);
    w->reentrant_drain = drain;
    w->reentrant_close = close;
    w->reentrant_get = get;
    w->reentrant_save = save;
    w->reentrant_flush = flush;
    pthread_mutex_unlock(&w->lock);
}

static void test_callback_calls_into_the_library(void) {
    datasync_instance *ds = open_memory("re");
    watcher w;
    watcher_init(&w, ds);
    datasync_observer ob = {&w, on_change_reentrant, on_destroy};
    datasync_subscription *sub = NULL;
    CHECK_OK(datasync_entity_observe_all(ds, "Note", "{}", &ob, &sub));
    CHECK_OK(datasync_entity_save(ds, "Note", "{\"text\":\"hello\"}", NULL));
    CHECK_OK(datasync_instance_drain_events(ds));
    pthread_mutex_lock(&w.lock);
    CHECK(w.reentrant_get == DATASYNC_OK);
    CHECK(w.reentrant_save == DATASYNC_OK);
    CHECK(w.reentrant_flush == DATASYNC_OK);
    CHECK(w.reentrant_drain == DATASYNC_WOULD_DEADLOCK);
    CHECK(w.reentrant_close == DATASYNC_WOULD_DEADLOCK);
    pthread_mutex_unlock(&w.lock);
    char *audits = NULL;
    CHECK_OK(datasync_entity_query(ds, "Audit", "{}", &audits));
    CHECK(occurrences(audits, "seen a note") >= 1);
    datasync_string_free(audits);
    datasync_subscription_free(sub);
    datasync_instance_free(ds);
    CHECK(watcher_destroyed(&w) == 1);
    watcher_free(&w);
}

/* Frees its own subscription when it sees {"stop": true}. */
static void on_change_self_free(void *userdata, const char *json, size_t len) {
    watcher *w = userdata;
    pthread_mutex_lock(&w->lock);
    if (w->freed) w->calls_after_free++;
    datasync_subscription *sub = w->self_sub;
    int stop = sub != NULL && !w->freed && strstr(json, "\"stop\":true") != NULL;
    if (stop) {
        w->freed = 1;
        w->self_sub = NULL;
    }
    pthread_mutex_unlock(&w->lock);
    record(w, json, len);
    if (stop) datasync_subscription_free(sub);
}

static void test_callback_frees_its_own_subscription(void) {
    datasync_instance *ds = open_memory("self");
    watcher w;
    watcher_init(&w, ds);
    datasync_observer ob = {&w, on_change_self_free, on_destroy};
    datasync_subscription *sub = NULL;
    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds, "Flag", "{\"stop\":false}", &id));
    CHECK_OK(datasync_entity_observe(ds, "Flag", id, &ob, &sub));
    pthread_mutex_lock(&w.lock);
    w.self_sub = sub;
    pthread_mutex_unlock(&w.lock);
    CHECK_OK(datasync_instance_drain_events(ds));
    char json[200];
    snprintf(json, sizeof json, "{\"id\":\"%s\",\"stop\":true}", id);
    CHECK_OK(datasync_entity_save(ds, "Flag", json, NULL));
    CHECK_OK(datasync_instance_drain_events(ds));
    snprintf(json, sizeof json, "{\"id\":\"%s\",\"stop\":false,\"again\":1}", id);
    CHECK_OK(datasync_entity_save(ds, "Flag", json, NULL));
    CHECK_OK(datasync_instance_drain_events(ds));
    pthread_mutex_lock(&w.lock);
    CHECK(w.freed == 1 && w.calls_after_free == 0);
    CHECK(w.destroyed == 1);
    pthread_mutex_unlock(&w.lock);
    datasync_instance_free(ds);
    CHECK(watcher_destroyed(&w) == 1);
    datasync_string_free(id);
    watcher_free(&w);
}

static void test_observe_failure_destroys(void) {
    datasync_instance *ds = open_memory("fail");
    watcher w;
    watcher_init(&w, ds);
    datasync_observer ob = {&w, on_change, on_destroy};
    datasync_subscription *sub = (datasync_subscription *)&w;
    CHECK_STATUS(datasync_entity_observe(ds, "Task", "no-separator-here", &ob, &sub), DATASYNC_INVALID_ID);
    CHECK(sub == (datasync_subscription *)&w);
    CHECK(watcher_destroyed(&w) == 1);
    CHECK_STATUS(datasync_entity_observe_all(ds, "Task", "{\"bogus\":1}", &ob, &sub), DATASYNC_INVALID_QUERY);
    CHECK(watcher_destroyed(&w) == 2);
    datasync_observer no_callback = {&w, NULL, on_destroy};
    CHECK_STATUS(datasync_entity_observe_all(ds, "Task", "{}", &no_callback, &sub), DATASYNC_INVALID_ARGUMENT);
    CHECK(watcher_destroyed(&w) == 3);
    CHECK_STATUS(datasync_entity_observe_all(NULL, "Task", "{}", &ob, &sub), DATASYNC_NULL_ARGUMENT);
    CHECK(watcher_destroyed(&w) == 4);
    CHECK(watcher_calls(&w) == 0);
    datasync_instance_free(ds);
    watcher_free(&w);
}

/* A slow observer so that changes queue up; close delivers them and then stops. */
static void on_change_slow(void *userdata, const char *json, size_t len) {
    struct timespec pause = {0, 2 * 1000 * 1000};
    nanosleep(&pause, NULL);
    record(userdata, json, len);
}

static void test_close_with_calls_pending(void) {
    datasync_instance *ds = open_memory("closing");
    watcher all, one;
    watcher_init(&all, ds);
    watcher_init(&one, ds);
    datasync_observer ob_all = {&all, on_change_slow, on_destroy};
    datasync_observer ob_one = {&one, on_change_slow, on_destroy};
    datasync_subscription *sub_all = NULL, *sub_one = NULL;
    char *id = NULL;
    CHECK_OK(datasync_entity_save(ds, "Counter", "{\"n\":0}", &id));
    CHECK_OK(datasync_entity_observe_all(ds, "Counter", "{}", &ob_all, &sub_all));
    CHECK_OK(datasync_entity_observe(ds, "Counter", id, &ob_one, &sub_one));
    for (int i = 1; i <= 100; i++) {
        char json[200];
        snprintf(json, sizeof json, "{\"id\":\"%s\",\"n\":%d}", id, i);
        CHECK_OK(datasync_entity_save(ds, "Counter", json, NULL));
    }
    CHECK_OK(datasync_instance_close(ds));
    /* Everything queued before close was delivered: the last values are final. */
    char *last = watcher_last(&one);
    CHECK(contains(last, "\"n\":100,"));
    free(last);
    last = watcher_last(&all);
    CHECK(contains(last, "\"n\":100,") && occurrences(last, "\"id\":") == 1);
    free(last);
    int calls_one = watcher_calls(&one), calls_all = watcher_calls(&all);
    CHECK_STATUS(datasync_entity_save(ds, "Counter", "{\"n\":1}", NULL), DATASYNC_CLOSED);
    CHECK_STATUS(datasync_instance_drain_events(ds), DATASYNC_CLOSED);
    datasync_instance_free(ds);
    CHECK(watcher_calls(&one) == calls_one && watcher_calls(&all) == calls_all);
    CHECK(watcher_destroyed(&one) == 1 && watcher_destroyed(&all) == 1);
    CHECK_OK(datasync_subscription_cancel(sub_one)); /* after the instance is gone: harmless */
    datasync_subscription_free(sub_one);
    datasync_subscription_free(sub_all);
    CHECK(watcher_destroyed(&one) == 1 && watcher_destroyed(&all) == 1);
    datasync_string_free(id);
    watcher_free(&all);
    watcher_free(&one);
}

/* The sync status: the current one first, then one after every chain sync. */
static void test_observe_status(void) {
    hstore local, cloud;
    hstore_init(&local);
    hstore_init(&cloud);
    datasync_instance *ds = open_with("st", &local, &cloud);
    CHECK(ds != NULL);
    watcher w;
    watcher_init(&w, ds);
    datasync_observer ob = {&w, on_change, on_destroy};
    datasync_subscription *sub = NULL;
    CHECK_OK(datasync_instance_observe_status(ds, &ob, &sub));
    CHECK_OK(datasync_instance_drain_events(ds));
    char *last = watcher_last(&w);
    CHECK(watcher_calls(&w) == 1);
    CHECK(contains(last, "\"online\":true") && contains(last, "\"closed\":false") &&
          contains(last, "\"pending_keys\":0") && contains(last, "\"last_sync\":null"));
    free(last);

    /* A write, then a sync with the cloud down: offline, one failure, still pending. */
    CHECK_OK(datasync_entity_save(ds, "Note", "{\"text\":\"a\"}", NULL));
    hstore_fail(&cloud, 5, 5);
    char *stats = NULL;
    CHECK_OK(datasync_instance_sync_now(ds, &stats));
    datasync_string_free(stats);
    CHECK_OK(datasync_instance_drain_events(ds));
    int after_offline = watcher_calls(&w);
    CHECK(after_offline >= 2);
    last = watcher_last(&w);
    CHECK(contains(last, "\"online\":false") && contains(last, "\"failures\":1") &&
          contains(last, "host load callback returned 5"));
    free(last);

    /* The cloud is back: online again, with a last sync instant and no error. */
    hstore_fail(&cloud, 0, 0);
    CHECK_OK(datasync_instance_sync_now(ds, &stats));
    datasync_string_free(stats);
    CHECK_OK(datasync_instance_drain_events(ds));
    CHECK(watcher_calls(&w) > after_offline);
    last = watcher_last(&w);
    CHECK(contains(last, "\"online\":true") && contains(last, "\"failures\":0") &&
          contains(last, "\"last_error\":null") && contains(last, "\"last_sync\":\"20"));
    free(last);

    /* Cancelled: no more calls; destroy ran once. */
    CHECK_OK(datasync_subscription_cancel(sub));
    CHECK(watcher_destroyed(&w) == 1);
    int before = watcher_calls(&w);
    CHECK_OK(datasync_instance_sync_now(ds, NULL));
    CHECK_OK(datasync_instance_drain_events(ds));
    CHECK(watcher_calls(&w) == before);
    datasync_subscription_free(sub);

    /* Failures: no callback, a closed instance; destroy runs each time. */
    datasync_observer no_callback = {&w, NULL, on_destroy};
    CHECK_STATUS(datasync_instance_observe_status(ds, &no_callback, &sub), DATASYNC_INVALID_ARGUMENT);
    CHECK(watcher_destroyed(&w) == 2);
    CHECK_OK(datasync_instance_close(ds));
    CHECK_STATUS(datasync_instance_observe_status(ds, &ob, &sub), DATASYNC_CLOSED);
    CHECK(watcher_destroyed(&w) == 3);
    CHECK(watcher_calls(&w) == before);
    datasync_instance_free(ds);
    watcher_free(&w);
    hstore_free(&local);
    hstore_free(&cloud);
}

int main(void) {
    test_observe_status();
    test_observe_one();
    test_observe_all_coalesces_to_the_final_state();
    test_callback_calls_into_the_library();
    test_callback_frees_its_own_subscription();
    test_observe_failure_destroys();
    test_close_with_calls_pending();
    return finish("test_observe");
}
