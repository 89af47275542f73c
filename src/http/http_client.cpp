/*
 * http_client.cpp: see http_client.h.
 */
#include <cctype>
#include <cstring>
#include <ctime>
#include <curl/curl.h>
#include <stdexcept>

#include "http/http_client.h"

namespace pgsink
{

/* Keep at most this much of an answer's body (for messages). */
static constexpr size_t kBodyKeep = 1024;

/* libcurl calls these from C: no exception may leave them (returning 0 aborts the transfer). */
static size_t on_body(char *data, size_t size, size_t n, void *user) noexcept
{
    std::string *body = static_cast<std::string *>(user);
    size_t len = size * n;
    try {
        if (body->size() < kBodyKeep)
            body->append(data, std::min(len, kBodyKeep - body->size()));
    } catch (...) {
        return 0;
    }
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *user) noexcept
{
    std::string *retry_after = static_cast<std::string *>(user);
    size_t len = size * n;
    static const char kName[] = "retry-after:";
    try {
        if (len > sizeof(kName) - 1 && strncasecmp(data, kName, sizeof(kName) - 1) == 0) {
            std::string v(data + sizeof(kName) - 1, len - (sizeof(kName) - 1));
            size_t a = v.find_first_not_of(" \t"), b = v.find_last_not_of(" \t\r\n");
            *retry_after = a == std::string::npos ? "" : v.substr(a, b - a + 1);
        }
    } catch (...) {
        return 0;
    }
    return len;
}

HttpClient::HttpClient()
{
    static bool initialized = false;
    if (!initialized) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            throw std::runtime_error("could not initialize libcurl");
        initialized = true;
    }
    multi_ = curl_multi_init();
    easy_ = curl_easy_init();
    if (multi_ == nullptr || easy_ == nullptr) {
        if (easy_)
            curl_easy_cleanup(static_cast<CURL *>(easy_));
        if (multi_)
            curl_multi_cleanup(static_cast<CURLM *>(multi_));
        throw std::runtime_error("could not initialize a libcurl handle");
    }
}

HttpClient::~HttpClient()
{
    if (easy_)
        curl_easy_cleanup(static_cast<CURL *>(easy_));
    if (multi_)
        curl_multi_cleanup(static_cast<CURLM *>(multi_));
}

HttpResponse HttpClient::post(const std::string &url, const std::vector<std::string> &headers,
                              const std::string &body, const Options &options,
                              const std::function<void()> &poll)
{
    CURL *easy = static_cast<CURL *>(easy_);
    CURLM *multi = static_cast<CURLM *>(multi_);
    HttpResponse r;
    char error[CURL_ERROR_SIZE] = "";
    struct curl_slist *list = nullptr;
    for (const std::string &h : headers)
        list = curl_slist_append(list, h.c_str());
    list = curl_slist_append(list, "Expect:"); /* no 100-continue round trip */

    curl_easy_reset(easy);
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, options.timeout_ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, options.connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options.ca_file.empty()) {
        /* That CA only: not also the system's directory of CAs. */
        curl_easy_setopt(easy, CURLOPT_CAINFO, options.ca_file.c_str());
        curl_easy_setopt(easy, CURLOPT_CAPATH, nullptr);
    }
    /* No proxy from the server's environment (http_proxy): headers carry credentials. */
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &r.retry_after);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error);

    curl_multi_add_handle(multi, easy);
    CURLcode result = CURLE_OK;
    try {
        for (bool done = false; !done;) {
            int running = 0;
            curl_multi_perform(multi, &running);
            int queued = 0;
            while (CURLMsg *m = curl_multi_info_read(multi, &queued))
                if (m->msg == CURLMSG_DONE && m->easy_handle == easy) {
                    result = m->data.result;
                    done = true;
                }
            if (done)
                break;
            curl_multi_poll(multi, nullptr, 0, 100, nullptr);
            poll(); /* interrupts: may throw */
        }
    } catch (...) {
        curl_multi_remove_handle(multi, easy);
        curl_slist_free_all(list);
        curl_easy_reset(easy);
        throw;
    }
    curl_multi_remove_handle(multi, easy);
    curl_slist_free_all(list);
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    /* No pointer into this frame stays on the handle (the connection stays open). */
    curl_easy_reset(easy);
    if (result != CURLE_OK) {
        r.transport_error = error[0] ? error : curl_easy_strerror(result);
        return r;
    }
    r.status = status;
    return r;
}

long retry_after_ms(const std::string &value, long now_unix)
{
    if (value.empty())
        return -1;
    bool digits = true;
    for (char c : value)
        digits = digits && isdigit(static_cast<unsigned char>(c));
    if (digits)
        return value.size() > 9 ? -1 : std::stol(value) * 1000;
    /* An HTTP date, in any of its three forms (RFC 9110, 5.6.7). */
    static const char *const kForms[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                         "%a %b %e %H:%M:%S %Y"};
    for (const char *form : kForms) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(value.c_str(), form, &tm);
        if (end == nullptr || *end != '\0')
            continue;
        long at = static_cast<long>(timegm(&tm));
        return at > now_unix ? (at - now_unix) * 1000 : 0;
    }
    return -1;
}

} // namespace pgsink
