/* The HTTP cloud tier from C: two instances share a real sync server
 * (datasync-server, started by run.sh, its URL in DATASYNC_TEST_SERVER and a token
 * in DATASYNC_TEST_TOKEN) and converge; bad URLs and tokens are refused. */
#include <unistd.h>

#include "harness.h"

static datasync_instance *open_device(const char *prefix, const char *url, const char *token,
                                      int custom_timeouts) {
    datasync_config *cfg = NULL;
    datasync_instance *ds = NULL;
    CHECK_OK(datasync_config_new(prefix, &cfg));
    if (cfg == NULL) return NULL;
    CHECK_OK(datasync_config_set_memory(cfg, DATASYNC_TIER_LOCAL, NULL));
    if (custom_timeouts) {
        CHECK_OK(datasync_config_set_cloud_http_timeouts(cfg, url, token, 2000, 5000));
    } else {
        CHECK_OK(datasync_config_set_cloud_http(cfg, url, token));
    }
    CHECK_OK(datasync_config_set_cloud_sync_interval(cfg, 3600 * 1000));
    CHECK_OK(datasync_config_set_sync_on_open(cfg, false));
    CHECK_OK(datasync_instance_open(cfg, &ds));
    return ds;
}

static char *sync_stats(datasync_instance *ds) {
    char *stats = NULL;
    CHECK_OK(datasync_instance_sync_now(ds, &stats));
    if (!contains(stats, "\"offline\":false")) fprintf(stderr, "stats: %s\n", stats ? stats : "(none)");
    return stats;
}

static void test_two_devices_through_the_server(const char *url, const char *token) {
    char prefix[32];
    /* The server outlives one run of this program: a prefix of its own. */
    snprintf(prefix, sizeof prefix, "c%ld", (long)getpid());
    datasync_instance *a = open_device(prefix, url, token, 0);
    datasync_instance *b = open_device(prefix, url, token, 1);
    CHECK(a != NULL && b != NULL);
    if (a == NULL || b == NULL) {
        datasync_instance_free(a);
        datasync_instance_free(b);
        return;
    }

    char *alice = NULL, *bob = NULL, *json = NULL;
    CHECK_OK(datasync_entity_save(a, "User", "{\"name\":\"Alice\"}", &alice));
    char *stats = sync_stats(a);
    CHECK(contains(stats, "\"offline\":false") && contains(stats, "\"errors\":[]"));
    datasync_string_free(stats);

    stats = sync_stats(b);
    CHECK(contains(stats, "\"offline\":false"));
    datasync_string_free(stats);
    CHECK_OK(datasync_entity_get(b, "User", alice, &json));
    CHECK(contains(json, "Alice"));
    datasync_string_free(json);
    json = NULL;

    /* Both edit: B adds Bob and renames Alice; A syncs last and sees both. */
    CHECK_OK(datasync_entity_save(b, "User", "{\"name\":\"Bob\"}", &bob));
    char edit[128];
    snprintf(edit, sizeof edit, "{\"id\":\"%s\",\"name\":\"Alice B.\"}", alice ? alice : "");
    char *again = NULL;
    CHECK_OK(datasync_entity_save(b, "User", edit, &again));
    datasync_string_free(again);
    for (int round = 0; round < 2; round++) {
        datasync_string_free(sync_stats(b));
        datasync_string_free(sync_stats(a));
    }
    CHECK_OK(datasync_entity_get(a, "User", bob, &json));
    CHECK(contains(json, "Bob"));
    datasync_string_free(json);
    json = NULL;
    CHECK_OK(datasync_entity_get(a, "User", alice, &json));
    CHECK(contains(json, "Alice B."));
    datasync_string_free(json);

    datasync_string_free(alice);
    datasync_string_free(bob);
    datasync_instance_free(a);
    datasync_instance_free(b);
}

static void test_bad_settings_are_refused(void) {
    datasync_config *cfg = NULL;
    CHECK_OK(datasync_config_new("app", &cfg));
    CHECK_STATUS(datasync_config_set_cloud_http(cfg, "ftp://example.test", "t"), DATASYNC_INVALID_CONFIG);
    CHECK(contains(datasync_error_message(), "ftp://example.test"));
    CHECK_STATUS(datasync_config_set_cloud_http(cfg, "http://127.0.0.1:1", ""), DATASYNC_INVALID_CONFIG);
    CHECK_STATUS(datasync_config_set_cloud_http(cfg, NULL, "t"), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_config_set_cloud_http(NULL, "http://127.0.0.1:1", "t"), DATASYNC_NULL_ARGUMENT);
    CHECK_STATUS(datasync_config_set_cloud_http_timeouts(cfg, "http://127.0.0.1:1", "t", 0, 10),
                 DATASYNC_INVALID_CONFIG);
    datasync_config_free(cfg);
}

int main(void) {
    const char *url = getenv("DATASYNC_TEST_SERVER");
    const char *token = getenv("DATASYNC_TEST_TOKEN");
    test_bad_settings_are_refused();
    if (url == NULL || token == NULL) {
        fprintf(stderr, "DATASYNC_TEST_SERVER and DATASYNC_TEST_TOKEN must name a running datasync-server (run.sh starts one)\n");
        failures++;
    } else {
        test_two_devices_through_the_server(url, token);
    }
    return finish("test_http");
}
