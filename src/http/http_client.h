/*
 * http_client.h: HTTP requests with libcurl's multi interface, for sinks.
 *
 * A request never blocks the process beyond a tenth of a second at a time:
 * between polls of its sockets it calls the caller's poll function, which
 * serves interrupts (SIGTERM, a reload) and may throw to abandon the
 * request. One connection is kept alive between requests. Certificates are
 * always verified (a private CA through ca_file). No signals (NOSIGNAL).
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace pgsink
{

struct HttpResponse {
    long status = 0; /* 0: no answer (transport_error says why) */
    std::string transport_error;
    std::string body;        /* the first bytes of the answer's body */
    std::string retry_after; /* the Retry-After header, if any */
};

class HttpClient
{
  public:
    struct Options {
        long timeout_ms = 30000;
        long connect_timeout_ms = 10000;
        std::string ca_file; /* empty: the system's CAs */
    };
    HttpClient();
    ~HttpClient();
    HttpClient(const HttpClient &) = delete;
    HttpClient &operator=(const HttpClient &) = delete;

    HttpResponse post(const std::string &url, const std::vector<std::string> &headers,
                      const std::string &body, const Options &options,
                      const std::function<void()> &poll);

  private:
    void *multi_ = nullptr; /* CURLM */
    void *easy_ = nullptr;  /* CURL, reused: keep-alive */
};

/*
 * Milliseconds to wait that a Retry-After value asks for (seconds, or an
 * HTTP date), or -1 if there is none or it cannot be read.
 */
long retry_after_ms(const std::string &value, long now_unix);

} // namespace pgsink
