// The consumer's store filling, in C++: the SDK's public headers compile
// as C++ and its functions link from C++.
#include <shoal/client.h>
#include <shoal/port_posix.h>
#include <shoal/store.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "consumer.h"

int consumer_fill_store(const char *path, const char *collection, int count, char *msg,
                        size_t msg_len)
{
    shoal_errinfo ei = {};
    shoal_store *st = nullptr;
    if (shoal_store_open(path, nullptr, &st, &ei) != SHOAL_OK) {
        std::snprintf(msg, msg_len, "%s", ei.msg);
        return -1;
    }
    // Two classes a linear model separates: the label is the sign of the
    // first feature.
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    std::vector<float> features(static_cast<size_t>(count) * 4);
    std::vector<shoal_example> examples(static_cast<size_t>(count));
    for (int i = 0; i < count; i++) {
        float *f = &features[static_cast<size_t>(i) * 4];
        f[0] = (i % 2 ? 1.0f : -1.0f) * (0.5f + static_cast<float>(i % 7) / 7.0f);
        f[1] = static_cast<float>(i % 5) / 5.0f;
        f[2] = static_cast<float>(i % 3) / 3.0f;
        f[3] = 0.25f;
        shoal_example &e = examples[static_cast<size_t>(i)];
        e.features = f;
        e.feature_count = 4;
        e.label = i % 2;
        e.timestamp_ms = now_ms - count + i;
    }
    shoal_err err =
        shoal_store_add_batch(st, collection, examples.data(), examples.size(), now_ms, &ei);
    if (err != SHOAL_OK)
        std::snprintf(msg, msg_len, "%s: %s", shoal_err_name(err), ei.msg);
    shoal_store_close(st);
    return err == SHOAL_OK ? 0 : -1;
}
