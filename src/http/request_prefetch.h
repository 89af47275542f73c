/*
 * request_prefetch.h: the next batch's first request, made on a thread of
 * its own while the delivery worker's thread serves the requests in flight.
 *
 * Making a webhook request costs as much as sending it: the body is copied
 * out of the batch and signed (HMAC-SHA256 over megabytes). With one
 * request in flight (the webhook's default, for order) that work used to
 * wait for the answer to the one before; made ahead, the worker sends the
 * next batch as soon as the answer comes, and the two cores share the work.
 *
 * The Elasticsearch sink's _bulk body (the batch's _ids, action and
 * metadata lines, rows copied) is made here too.
 *
 * Only for sinks whose HttpSink::prepares_ahead() says that a fresh
 * exchange's next() reads nothing but the batch, the sink's settings and
 * what the exchange took of the sink when the worker's thread made it.
 * The batch's lines must stay where they are until take() or cancel() (the
 * delivery window keeps a batch that is not in flight in place; the worker
 * cancels before it clears the window or drops the sink).
 *
 * Pure C++: no PostgreSQL headers; the thread never calls PostgreSQL and
 * has every signal blocked (core/quiet_thread.h).
 */
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "sinks/sink.h"

namespace pgsink
{

class RequestPrefetch
{
  public:
    RequestPrefetch() = default;
    ~RequestPrefetch() { cancel(); }
    RequestPrefetch(const RequestPrefetch &) = delete;
    RequestPrefetch &operator=(const RequestPrefetch &) = delete;

    /* Holds (or is making) the request of a batch. */
    bool busy() const { return thread_.joinable(); }
    /* Still making the request of batch id (take() would wait for it)? */
    bool making(uint64_t id) const { return thread_.joinable() && id_ == id && !done_.load(); }
    /* Still making a request? */
    bool making() const { return thread_.joinable() && !done_.load(); }
    /* Which batch, when busy(). */
    uint64_t id() const { return id_; }

    /* Make exchange->next() for batch id now, on the thread. */
    void start(uint64_t id, std::unique_ptr<HttpSink::Exchange> exchange, int64_t now_ms);

    struct Made {
        std::unique_ptr<HttpSink::Exchange> exchange;
        HttpRequest request;
    };
    /*
     * Batch id's exchange and first request, once made (waits for the
     * thread). Nothing if the prefetch was for another batch, failed (the
     * caller makes the request itself, and sees the error), is older
     * than max_age_ms (a webhook-timestamp that old is stale), or was made
     * from sink state that changed since (Exchange::current()): then it is
     * dropped.
     */
    std::optional<Made> take(uint64_t id, int64_t now_ms, int64_t max_age_ms);

    /* Wait for the thread and drop what it made. */
    void cancel();

  private:
    std::thread thread_;
    uint64_t id_ = 0;
    int64_t started_ms_ = 0;
    Made made_;
    bool failed_ = false;
    std::atomic<bool> done_{false}; /* the thread is done with made_ */
};

} // namespace pgsink
