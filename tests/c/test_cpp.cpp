// The header from C++17: RAII handles, a lambda observer, several threads writing
// into one instance at once.
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "datasync.h"

namespace {

int failures = 0;
int checks = 0;

void check(bool ok, const char *what, int line) {
    checks++;
    if (!ok) {
        failures++;
        std::fprintf(stderr, "test_cpp.cpp:%d: check failed: %s\n", line, what);
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

// Throws with the library's message when a call fails.
void ok(datasync_code status) {
    if (status != DATASYNC_OK) {
        throw std::runtime_error(std::string(datasync_code_name(status)) + ": " + datasync_error_message());
    }
}

struct InstanceFree {
    void operator()(datasync_instance *ds) const { datasync_instance_free(ds); }
};
struct SubscriptionFree {
    void operator()(datasync_subscription *sub) const { datasync_subscription_free(sub); }
};
struct StringFree {
    void operator()(char *text) const { datasync_string_free(text); }
};
using Instance = std::unique_ptr<datasync_instance, InstanceFree>;
using Subscription = std::unique_ptr<datasync_subscription, SubscriptionFree>;
using Text = std::unique_ptr<char, StringFree>;

std::string take(char *text) {
    Text owned(text);
    return owned ? std::string(owned.get()) : std::string();
}

Instance open(const char *prefix) {
    datasync_config *cfg = nullptr;
    ok(datasync_config_new(prefix, &cfg));
    ok(datasync_config_set_memory(cfg, DATASYNC_TIER_LOCAL, nullptr));
    datasync_instance *ds = nullptr;
    ok(datasync_instance_open(cfg, &ds));
    return Instance(ds);
}

// An observer backed by a std::function; the library destroys it exactly once.
Subscription observe_all(datasync_instance *ds, const char *name, const char *query, std::function<void(std::string)> fn,
                         std::atomic<int> &destroyed) {
    struct Box {
        std::function<void(std::string)> fn;
        std::atomic<int> *destroyed;
    };
    datasync_observer ob{};
    ob.userdata = new Box{std::move(fn), &destroyed};
    ob.on_change = [](void *userdata, const char *json, size_t len) {
        static_cast<Box *>(userdata)->fn(std::string(json, len));
    };
    ob.destroy = [](void *userdata) {
        auto *box = static_cast<Box *>(userdata);
        box->destroyed->fetch_add(1);
        delete box;
    };
    datasync_subscription *sub = nullptr;
    ok(datasync_entity_observe_all(ds, name, query, &ob, &sub));
    return Subscription(sub);
}

int count_of(const std::string &text, const std::string &needle) {
    int n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) n++;
    return n;
}

}  // namespace

int main() {
    try {
        CHECK(std::strlen(datasync_version()) > 0);
        std::atomic<int> destroyed{0};
        std::mutex lock;
        std::string last;
        {
            Instance ds = open("cpp");
            Subscription sub = observe_all(ds.get(), "Point", "{\"sort\":[\"i\"]}", [&](std::string json) {
                std::lock_guard<std::mutex> guard(lock);
                last = std::move(json);
            }, destroyed);

            std::vector<std::thread> writers;
            for (int t = 0; t < 4; t++) {
                writers.emplace_back([&ds, t] {
                    for (int i = 0; i < 25; i++) {
                        std::string json = "{\"i\":" + std::to_string(t * 25 + i) + ",\"thread\":" + std::to_string(t) + "}";
                        char *id = nullptr;
                        ok(datasync_entity_save(ds.get(), "Point", json.c_str(), &id));
                        datasync_string_free(id);
                    }
                });
            }
            for (auto &w : writers) w.join();

            char *out = nullptr;
            ok(datasync_entity_query(ds.get(), "Point", "{\"where\":{\"thread\":2}}", &out));
            CHECK(count_of(take(out), "\"thread\":2") == 25);
            ok(datasync_instance_drain_events(ds.get()));
            {
                std::lock_guard<std::mutex> guard(lock);
                CHECK(count_of(last, "\"id\":") == 100);
                CHECK(last.find("\"i\":0,") < last.find("\"i\":99,"));
            }
            char *stats = nullptr;
            ok(datasync_instance_sync_now(ds.get(), &stats));
            CHECK(take(stats).find("\"errors\":[]") != std::string::npos);
            CHECK(datasync_entity_get(ds.get(), "Point", "not-an-id", &out) == DATASYNC_INVALID_ID);
            CHECK(destroyed.load() == 0);
        }
        // The subscription was freed before the instance (reverse declaration order).
        CHECK(destroyed.load() == 1);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "test_cpp: %s\n", e.what());
        failures++;
    }
    std::printf("test_cpp: %d checks, %d failed\n", checks, failures);
    std::fflush(stdout);
    return failures == 0 ? 0 : 1;
}
