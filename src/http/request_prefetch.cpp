/*
 * request_prefetch.cpp: see request_prefetch.h.
 */
#include "http/request_prefetch.h"
#include <pthread.h>

#include "core/quiet_thread.h"

namespace pgsink
{

void RequestPrefetch::start(uint64_t id, std::unique_ptr<HttpSink::Exchange> exchange,
                            int64_t now_ms)
{
    cancel();
    id_ = id;
    started_ms_ = now_ms;
    failed_ = false;
    done_ = false;
    made_.exchange = std::move(exchange);
    /* The thread owns made_ until joined; nothing else touches it meanwhile. */
    thread_ = quiet_thread([this] {
        pthread_setname_np(pthread_self(), "pgsink-request"); /* for top -H and perf */
        try {
            made_.request = made_.exchange->next();
        } catch (...) {
            failed_ = true; /* made again by the caller, who reports the error */
        }
        done_ = true;
    });
}

std::optional<RequestPrefetch::Made> RequestPrefetch::take(uint64_t id, int64_t now_ms,
                                                           int64_t max_age_ms)
{
    if (!thread_.joinable())
        return std::nullopt;
    thread_.join();
    std::optional<Made> out;
    /* Made from what the sink held then: dropped if an answer since changed it. */
    if (id == id_ && !failed_ && now_ms - started_ms_ <= max_age_ms && made_.exchange &&
        made_.exchange->current())
        out = std::move(made_);
    made_ = Made{};
    return out;
}

void RequestPrefetch::cancel()
{
    if (thread_.joinable())
        thread_.join();
    made_ = Made{};
}

} // namespace pgsink
