/* The parity scenario through the C ABI: the same steps as examples/parity.rs,
 * printing the same lines, which tests/parity/run.sh compares with
 * tests/parity/expected.txt. Built against include/datasync.h and target/debug's
 * shared library (see run.sh); uses the host blob store of tests/c/harness.h.
 *
 * The instance has prefix "app", a host key strategy (a vtable) partitioning notes
 * by their "owner" (this device may read and write only "app.alice"), no local tier,
 * and a cloud that is a host byte map the scenario can switch offline. Every sync
 * is one the scenario asks for (timers and retries are an hour away).
 *
 * The cloud is seeded with partitions in canonical form whose instants lie far in
 * the future (2100): the instance clock never adopts a stamp that far ahead, so an
 * edit of a seeded entity is stamped exactly at the entity's own updatedAt (with
 * its version + 1), and no printed line depends on the wall clock.
 *
 * The library's JSON (entities, lists, stats, status, partitions) is compact with
 * sorted keys, and the scenario's texts hold no quotes or escapes, so the few
 * fields read here are found by their "name": prefix. */
#include <ctype.h>
#include <stdbool.h>

#include "../c/harness.h"

#define BASE "2100-01-01T00:00:00.000Z"
#define LATER "2100-01-01T00:00:01.000Z"
#define EARLIER "2099-12-31T23:59:59.000Z"
#define HOUR (3600 * 1000)

/* ---- reading the library's JSON ---- */

/* The text value of "field" in `obj` copied to `out` (empty when absent). */
static void json_text(const char *obj, const char *field, char *out, size_t n) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", field);
    out[0] = '\0';
    const char *at = obj ? strstr(obj, pattern) : NULL;
    if (at == NULL) return;
    at += strlen(pattern);
    size_t len = 0;
    while (at[len] != '\0' && at[len] != '"') len++;
    if (len >= n) len = n - 1;
    memcpy(out, at, len);
    out[len] = '\0';
}

/* The raw value of "field" (a number or true/false) in `obj`, as a word. */
static void json_word(const char *obj, const char *field, char *out, size_t n) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", field);
    snprintf(out, n, "?");
    const char *at = obj ? strstr(obj, pattern) : NULL;
    if (at == NULL) return;
    at += strlen(pattern);
    size_t len = 0;
    while (at[len] != '\0' && (isalnum((unsigned char)at[len]) || at[len] == '-')) len++;
    if (len >= n) len = n - 1;
    memcpy(out, at, len);
    out[len] = '\0';
}

/* "title vN" of an entity object. */
static void describe(const char *entity, char *out, size_t n) {
    char title[128], version[32];
    json_text(entity, "title", title, sizeof title);
    json_word(entity, "version", version, sizeof version);
    snprintf(out, n, "%s v%s", title, version);
}

/* A copy of the flat object starting at `open` (a '{'), up to its '}'. */
static char *object_at(const char *open) {
    const char *close = strchr(open, '}');
    size_t len = close ? (size_t)(close - open + 1) : strlen(open);
    char *out = malloc(len + 1);
    memcpy(out, open, len);
    out[len] = '\0';
    return out;
}

/* The error kind of a code, as the other doors name it: DATASYNC_INVALID_ID ->
 * InvalidId. */
static void kind_of(datasync_code code, char *out, size_t n) {
    if (code == DATASYNC_OK) {
        snprintf(out, n, "ok");
        return;
    }
    const char *name = datasync_code_name(code);
    if (strncmp(name, "DATASYNC_", 9) == 0) name += 9;
    size_t j = 0;
    bool upper = true;
    for (; *name != '\0' && j + 1 < n; name++) {
        if (*name == '_') {
            upper = true;
            continue;
        }
        out[j++] = upper ? *name : (char)tolower((unsigned char)*name);
        upper = false;
    }
    out[j] = '\0';
}

/* ---- the cloud: harness.h's blob store, every call failing while offline ---- */

static int32_t cloud_clear(void *userdata, const char *key) {
    hstore *s = userdata;
    pthread_mutex_lock(&s->lock);
    int32_t rc = s->fail_load;
    pthread_mutex_unlock(&s->lock);
    return rc != 0 ? rc : hs_clear(userdata, key);
}

static int32_t cloud_keys(void *userdata, datasync_bytes_sink *sink) {
    hstore *s = userdata;
    pthread_mutex_lock(&s->lock);
    int32_t rc = s->fail_load;
    pthread_mutex_unlock(&s->lock);
    return rc != 0 ? rc : hs_keys(userdata, sink);
}

static void set_offline(hstore *cloud, bool offline) {
    hstore_fail(cloud, offline ? 7 : 0, offline ? 7 : 0);
}

/* Drops the cloud's metadata (keys starting with '!'), as a seeded tier has none:
 * the library rebuilds it from the partitions. */
static void drop_metadata(hstore *cloud) {
    for (;;) {
        char *key = NULL;
        pthread_mutex_lock(&cloud->lock);
        for (size_t i = 0; i < cloud->count && key == NULL; i++) {
            if (cloud->items[i].key[0] == '!') key = text_copy(cloud->items[i].key);
        }
        pthread_mutex_unlock(&cloud->lock);
        if (key == NULL) return;
        hs_clear(cloud, key);
        free(key);
    }
}

/* One note as a tier stores it (canonical: keys sorted, no whitespace), appended. */
static void note(char *out, size_t n, const char *id, const char *owner, const char *title,
                 const char *at, int version) {
    size_t used = strlen(out);
    snprintf(out + used, n - used,
             "%s\"%s\":{\"createdAt\":\"" BASE "\",\"id\":\"%s\",\"owner\":\"%s\",\"title\":\"%s\","
             "\"updatedAt\":\"%s\",\"version\":%d}",
             used > strlen("{\"Note\":{") ? "," : "", id, id, owner, title, at, version);
}

/* ---- the key strategy ---- */

static int32_t owner_key(void *userdata, const char *entity_name, const char *entity_json,
                         size_t entity_len, datasync_bytes_sink *out_key) {
    (void)userdata;
    (void)entity_name;
    (void)entity_len;
    char owner[128];
    json_text(entity_json, "owner", owner, sizeof owner);
    return datasync_bytes_sink_write_str(out_key, owner[0] ? owner : "nobody") == DATASYNC_OK ? 0 : 1;
}

static int32_t alice_only(void *userdata, const char *prefix, const char *entity_name,
                          const char *filter_json, size_t filter_len, datasync_bytes_sink *out) {
    (void)userdata;
    (void)entity_name;
    (void)filter_json;
    (void)filter_len;
    char keys[256];
    snprintf(keys, sizeof keys, "{\"keys\":[\"%s.alice\"]}", prefix);
    return datasync_bytes_sink_write_str(out, keys) == DATASYNC_OK ? 0 : 1;
}

/* ---- the scenario ---- */

static datasync_instance *ds;

static void save(const char *json) {
    char *id = NULL, *got = NULL, version[32];
    CHECK_OK(datasync_entity_save(ds, "Note", json, &id));
    CHECK_OK(datasync_entity_get(ds, "Note", id, &got));
    json_word(got, "version", version, sizeof version);
    printf("save %s v%s\n", id ? id : "?", version);
    fflush(stdout);
    datasync_string_free(got);
    datasync_string_free(id);
}

static void delete_note(const char *id) {
    bool existed = false;
    CHECK_OK(datasync_entity_delete(ds, "Note", id, &existed));
    printf("delete %s existed=%s\n", id, existed ? "true" : "false");
    fflush(stdout);
}

/* The stats line of a sync. */
static void sync_line(bool full) {
    char *stats = NULL, offline[16], copied[32], merged[32], refused[32], conflicts[32];
    CHECK_OK(datasync_instance_sync_now(ds, &stats));
    json_word(stats, "offline", offline, sizeof offline);
    json_word(stats, "keys_copied", copied, sizeof copied);
    json_word(stats, "keys_merged", merged, sizeof merged);
    json_word(stats, "keys_refused", refused, sizeof refused);
    json_word(stats, "conflicts", conflicts, sizeof conflicts);
    if (full) {
        printf("sync offline=%s copied=%s merged=%s refused=%s conflicts=%s\n", offline, copied,
               merged, refused, conflicts);
    } else {
        printf("sync offline=%s\n", offline);
    }
    datasync_string_free(stats);
}

static void status_line(void) {
    char *status = NULL, online[16], pending[32];
    CHECK_OK(datasync_instance_status(ds, &status));
    json_word(status, "online", online, sizeof online);
    json_word(status, "pending_keys", pending, sizeof pending);
    printf("status online=%s pending=%s\n", online, pending);
    datasync_string_free(status);
}

/* Who won: "deleted", or "local: title vN" / "remote: ..." by the title. */
static void winner(const char *what, const char *id, const char *local, const char *remote) {
    char *got = NULL, title[128], line[256];
    CHECK_OK(datasync_entity_get(ds, "Note", id, &got));
    if (got == NULL) {
        printf("%s -> deleted\n", what);
        return;
    }
    json_text(got, "title", title, sizeof title);
    describe(got, line, sizeof line);
    const char *side = strcmp(title, local) == 0 ? "local" : strcmp(title, remote) == 0 ? "remote" : "neither";
    printf("%s -> %s: %s\n", what, side, line);
    datasync_string_free(got);
}

/* The state of `id` in the cloud's partition text. */
static void cloud_line(const char *partition, const char *id) {
    char pattern[96], line[256];
    snprintf(pattern, sizeof pattern, "\"%s\":{", id);
    const char *active = partition ? strstr(partition, pattern) : NULL;
    snprintf(pattern, sizeof pattern, "\"%s\":\"", id);
    const char *deleted = partition ? strstr(partition, "\"deleted\":{\"Note\":{") : NULL;
    if (active != NULL) {
        char *obj = object_at(active + strlen(id) + 3);
        describe(obj, line, sizeof line);
        free(obj);
    } else if (deleted != NULL && strstr(deleted, pattern) != NULL) {
        snprintf(line, sizeof line, "deleted");
    } else {
        snprintf(line, sizeof line, "absent");
    }
    printf("cloud %s -> %s\n", id, line);
}

int main(void) {
    hstore cloud;
    hstore_init(&cloud);
    char blob[4096] = "{\"Note\":{";
    note(blob, sizeof blob, "alice.c1", "alice", "c1 base", BASE, 1);
    note(blob, sizeof blob, "alice.c2", "alice", "c2 base", BASE, 1);
    note(blob, sizeof blob, "alice.t1", "alice", "t1 base", BASE, 1);
    note(blob, sizeof blob, "alice.t2", "alice", "t2 base", BASE, 4);
    strcat(blob, "}}");
    hstore_put_text(&cloud, "app.alice", blob);
    snprintf(blob, sizeof blob, "{\"Note\":{");
    note(blob, sizeof blob, "bob.n9", "bob", "bob's", BASE, 1);
    strcat(blob, "}}");
    hstore_put_text(&cloud, "app.bob", blob);

    datasync_config *cfg = NULL;
    CHECK_OK(datasync_config_new("app", &cfg));
    datasync_strategy_vtable strategy;
    memset(&strategy, 0, sizeof strategy);
    strategy.logical_key = owner_key;
    strategy.candidate_keys = alice_only;
    CHECK_OK(datasync_config_set_strategy(cfg, &strategy));
    datasync_persistence_vtable vt = hstore_vtable(&cloud);
    vt.clear = cloud_clear;
    vt.keys = cloud_keys;
    CHECK_OK(datasync_config_set_persistence(cfg, DATASYNC_TIER_CLOUD, &vt));
    CHECK_OK(datasync_config_set_store_sync_delay(cfg, HOUR));
    CHECK_OK(datasync_config_set_cloud_sync_interval(cfg, HOUR));
    CHECK_OK(datasync_config_set_retry(cfg, HOUR, HOUR));
    CHECK_OK(datasync_config_set_sync_on_open(cfg, false));
    /* The scenario reads the cloud's partition documents back: format 1. */
    CHECK_OK(datasync_config_set_format(cfg, 1));
    if (datasync_instance_open(cfg, &ds) != DATASYNC_OK) {
        fprintf(stderr, "open: %s\n", datasync_error_message());
        return 1;
    }

    /* Saves with caller-supplied ids, and deletes. */
    save("{\"id\":\"alice.n1\",\"owner\":\"alice\",\"title\":\"n1 first\"}");
    save("{\"id\":\"alice.n1\",\"owner\":\"alice\",\"title\":\"n1 second\"}");
    save("{\"id\":\"alice.n2\",\"owner\":\"alice\",\"title\":\"n2\"}");
    delete_note("alice.n2");
    char *got = NULL, line[256];
    CHECK_OK(datasync_entity_get(ds, "Note", "alice.n2", &got));
    if (got == NULL) snprintf(line, sizeof line, "none");
    else describe(got, line, sizeof line);
    printf("get alice.n2 -> %s\n", line);
    datasync_string_free(got);
    delete_note("alice.n2");
    /* An id the strategy chooses: its partition, not its random part, is printed. */
    char *fresh = NULL, version[32];
    CHECK_OK(datasync_entity_save(ds, "Note", "{\"owner\":\"alice\",\"title\":\"fresh\"}", &fresh));
    if (fresh != NULL) {
        const char *dot = strrchr(fresh, '.');
        got = NULL;
        CHECK_OK(datasync_entity_get(ds, "Note", fresh, &got));
        json_word(got, "version", version, sizeof version);
        datasync_string_free(got);
        printf("save new %.*s.<%zu> v%s\n", dot ? (int)(dot - fresh) : 0, fresh,
               dot ? strlen(dot + 1) : 0, version);
        bool existed = false;
        CHECK_OK(datasync_entity_delete(ds, "Note", fresh, &existed));
        printf("delete new existed=%s\n", existed ? "true" : "false");
        datasync_string_free(fresh);
    }

    /* Local edits of the seeded notes. */
    save("{\"id\":\"alice.c1\",\"owner\":\"alice\",\"title\":\"c1 local\"}");
    save("{\"id\":\"alice.c2\",\"owner\":\"alice\",\"title\":\"c2 local\"}");
    delete_note("alice.t1");
    save("{\"id\":\"alice.t2\",\"owner\":\"alice\",\"title\":\"t2 local\"}");

    /* Meanwhile another device's edits reached the cloud: c1 newer, c2 older (with a
     * greater version), t1 edited at the instant of the local delete, t2 edited at
     * the instant of the local edit with a smaller version (and greater bytes). */
    snprintf(blob, sizeof blob, "{\"Note\":{");
    note(blob, sizeof blob, "alice.c1", "alice", "c1 remote", LATER, 2);
    note(blob, sizeof blob, "alice.c2", "alice", "c2 remote", EARLIER, 9);
    note(blob, sizeof blob, "alice.t1", "alice", "t1 remote", BASE, 7);
    note(blob, sizeof blob, "alice.t2", "alice", "t2 remote", BASE, 3);
    strcat(blob, "}}");
    drop_metadata(&cloud);
    hstore_put_text(&cloud, "app.alice", blob);
    sync_line(true);
    winner("conflict alice.c1 newer remote", "alice.c1", "c1 local", "c1 remote");
    winner("conflict alice.c2 older remote", "alice.c2", "c2 local", "c2 remote");
    winner("tie alice.t1 delete vs edit", "alice.t1", "t1 local", "t1 remote");
    winner("tiebreak alice.t2 equal instant", "alice.t2", "t2 local", "t2 remote");
    /* The merge reached the cloud too. */
    char *stored = hstore_get_text(&cloud, "app.alice");
    const char *ids[] = {"alice.c1", "alice.c2", "alice.n1", "alice.t1", "alice.t2"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) cloud_line(stored, ids[i]);
    free(stored);

    /* A sorted query, one line per note. */
    char *list = NULL;
    CHECK_OK(datasync_entity_query(ds, "Note", "{\"sort\":[\"title:desc\"]}", &list));
    for (const char *at = list ? strchr(list, '{') : NULL; at != NULL; at = strchr(at + 1, '{')) {
        char *obj = object_at(at), id[128];
        json_text(obj, "id", id, sizeof id);
        describe(obj, line, sizeof line);
        printf("query title:desc %s %s\n", id, line);
        free(obj);
    }
    datasync_string_free(list);

    /* Bob's partition is not this device's: every path refuses it. */
    char kind[64];
    got = NULL;
    kind_of(datasync_entity_get(ds, "Note", "bob.n9", &got), kind, sizeof kind);
    datasync_string_free(got);
    printf("get bob.n9 -> %s\n", kind);
    char *id = NULL;
    kind_of(datasync_entity_save(ds, "Note", "{\"id\":\"bob.n9\",\"owner\":\"bob\",\"title\":\"taken\"}", &id),
            kind, sizeof kind);
    datasync_string_free(id);
    printf("save bob.n9 -> %s\n", kind);
    bool existed = false;
    kind_of(datasync_entity_delete(ds, "Note", "bob.n9", &existed), kind, sizeof kind);
    printf("delete bob.n9 -> %s\n", kind);

    /* Offline: the write waits in the store, the sync says so, and goes through later. */
    set_offline(&cloud, true);
    save("{\"id\":\"alice.n3\",\"owner\":\"alice\",\"title\":\"n3 offline\"}");
    sync_line(false);
    status_line();
    set_offline(&cloud, false);
    sync_line(true);
    status_line();
    stored = hstore_get_text(&cloud, "app.alice");
    cloud_line(stored, "alice.n3");
    free(stored);

    CHECK_OK(datasync_instance_close(ds));
    datasync_instance_free(ds);
    hstore_free(&cloud);
    fflush(stdout);
    if (failures > 0) {
        fprintf(stderr, "parity.c: %d of %d calls failed\n", failures, checks);
        return 1;
    }
    return 0;
}
