/*
 * http_pipeline.h: several HTTP requests in flight at once, with libcurl's
 * multi interface driven by the caller's event loop.
 *
 * The pipeline never waits itself: it says which sockets it waits on and
 * for how long at most (waits(), timeout_ms()), the caller waits on those
 * together with everything else it serves (the delivery worker: its latch,
 * so SIGTERM and SIGHUP are served at once while a request hangs), then
 * reports what happened (on_socket(), on_timer()) and collects finished
 * requests (take_done()). Connections are kept alive between requests.
 * Certificates are always verified (a private CA through ca_file); no
 * proxy from the environment; no signals (NOSIGNAL).
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <cstdint>
#include <memory>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace pgsink
{

struct HttpRequest {
    std::string url;
    std::vector<std::string> headers; /* "Name: value" */
    std::string body;                 /* POSTed (or sent with method) */
    /* "" or "POST"; "GET" sends no body; "PATCH", "PUT", "DELETE" send body as POST would. */
    std::string method;
    size_t keep_answer = 1024; /* bytes of the answer's body kept (more: an error) */
    long delay_ms = 0;         /* started this long after submit() (a poll) */
    /*
     * Instead of body: the body made while it is sent (chunked), so that
     * the receiver works on its start meanwhile. Called for the next bytes
     * (at most max, into buf); returns how many, 0 at the end; may throw
     * (the request fails, saying why). body_rewind: start again from the
     * first byte (libcurl sends again); false if it cannot.
     */
    std::function<size_t(char *buf, size_t max)> body_source;
    std::function<bool()> body_rewind;
    /*
     * With body_source: how many bytes it makes in all, sent as the
     * Content-Length (the body is made while it is sent, but its size is
     * known); -1: unknown, the body is sent chunked.
     */
    int64_t body_size = -1;
};

/*
 * What of a request may be a credential: its URL's parts (redact.h) and
 * every header's value. A transfer's error text (libcurl's, or why the
 * request could not start) is cut of them before anyone sees it.
 */
std::vector<std::string> request_secrets(const HttpRequest &r);

struct HttpResponse {
    long status = 0; /* 0: no answer (transport_error says why) */
    std::string transport_error;
    std::string body;        /* the answer's body: its first HttpRequest::keep_answer bytes */
    std::string retry_after; /* the Retry-After header, if any */
};

struct HttpOptions {
    long timeout_ms = 30000; /* the whole request */
    long connect_timeout_ms = 10000;
    std::string ca_file; /* empty: the system's CAs */
};

class HttpPipeline
{
  public:
    explicit HttpPipeline(HttpOptions options);
    ~HttpPipeline();
    HttpPipeline(const HttpPipeline &) = delete;
    HttpPipeline &operator=(const HttpPipeline &) = delete;

    /* Start a request; tag names it in take_done(). */
    void submit(uint64_t tag, HttpRequest request);
    size_t in_flight() const;

    struct Wait {
        int fd;
        bool read, write;
    };
    /* The sockets to wait on. */
    const std::vector<Wait> &waits() const { return waits_; }
    /*
     * Changes whenever a socket joins or leaves waits() (not when only what
     * is waited for changes), in this pipeline or any other of the process:
     * a caller that keeps its own wait set (an epoll set) builds it again
     * then, since a closed socket's number may come back as another socket.
     */
    uint64_t waits_generation() const { return waits_generation_; }
    /* Wait at most this long before on_timer() (-1: no limit). */
    long timeout_ms() const;
    /* A socket of waits() is ready. */
    void on_socket(int fd, bool readable, bool writable);
    /* Run what is due (timeouts, retries of connections); harmless if nothing is. */
    void on_timer();
    /* Requests that finished since the last call, with their tags. */
    std::vector<std::pair<uint64_t, HttpResponse>> take_done();
    /* Abandon every request in flight. */
    void cancel_all();

  private:
    struct Transfer;
    void collect();
    friend struct PipelineCallbacks; /* libcurl's socket and timer callbacks */

    HttpOptions options_;
    void *multi_ = nullptr; /* CURLM */
    std::vector<std::unique_ptr<Transfer>> active_;
    std::vector<void *> idle_easy_; /* CURL handles kept for reuse */
    std::vector<Wait> waits_;
    uint64_t waits_generation_ = 0;
    int64_t deadline_ms_ = -1; /* curl's timer, on the monotonic clock; -1: none */
    std::vector<std::pair<uint64_t, HttpResponse>> done_;
    struct Delayed {
        int64_t due_ms;
        uint64_t tag;
        HttpRequest request;
    };
    std::vector<Delayed> delayed_; /* submitted with a delay, not started yet */
};

/*
 * Milliseconds to wait that a Retry-After value asks for (seconds, or an
 * HTTP date), or -1 if there is none or it cannot be read.
 */
long retry_after_ms(const std::string &value, long now_unix);

/*
 * The first max bytes of an answer's body as valid UTF-8 on one line (a
 * broken or cut character becomes '?', a control character a space): it
 * goes into text columns (dead letters) and messages, which refuse
 * anything else.
 */
std::string answer_excerpt(const std::string &body, size_t max);

/*
 * A URL for messages: scheme, host and port only. User info, a path (some
 * services carry a credential there) and a query may all hold secrets.
 */
std::string url_for_messages(const std::string &url);

/* Milliseconds on the monotonic clock. */
int64_t monotonic_ms();

} // namespace pgsink
